"""Container networking: CNI plugin invocation and the engine's default bridge network."""

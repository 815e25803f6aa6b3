"""Docker-style commands of the container engine: parsing, wiring and output."""

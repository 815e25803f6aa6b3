"""Container engine: images, snapshots, runtime — independent of Kubernetes."""

"""Image references, content-addressed blobs, the local image store and image archives (load/save/import)."""

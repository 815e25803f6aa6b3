"""Unpacked image layers and container root filesystems: overlayfs, or full copies where it cannot be used."""

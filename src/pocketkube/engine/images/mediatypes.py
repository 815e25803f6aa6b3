"""Media types of OCI and Docker (schema 2) image documents and layers."""

from __future__ import annotations

OCI_LAYOUT_VERSION = "1.0.0"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
# Not in Docker's spec but written by containerd and BuildKit for uncompressed and zstd layers.
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

_INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
_CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})
_LAYER_COMPRESSION: dict[str, str | None] = {
    OCI_LAYER: None,
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDISTRIBUTABLE: None,
    OCI_LAYER_NONDISTRIBUTABLE_GZIP: "gzip",
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD: "zstd",
    DOCKER_LAYER: None,
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_LAYER_FOREIGN: "gzip",
}
_OCI_LAYER_FOR_COMPRESSION = {None: OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}
_DOCKER_LAYER_FOR_COMPRESSION = {None: DOCKER_LAYER, "gzip": DOCKER_LAYER_GZIP, "zstd": DOCKER_LAYER_ZSTD}


def is_index(media_type: str | None) -> bool:
    """An OCI image index or a Docker manifest list."""
    return media_type in _INDEXES


def is_manifest(media_type: str | None) -> bool:
    """A single-platform image manifest, OCI or Docker schema 2."""
    return media_type in _MANIFESTS


def is_config(media_type: str | None) -> bool:
    """An image configuration, OCI or Docker."""
    return media_type in _CONFIGS


def is_layer(media_type: str | None) -> bool:
    """A filesystem layer (tar, possibly compressed) of any flavour we can unpack."""
    return media_type in _LAYER_COMPRESSION


def layer_compression(media_type: str) -> str | None:
    """``"gzip"``, ``"zstd"`` or None (plain tar) for a layer media type; ValueError for anything else."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise ValueError(f"not a layer media type: {media_type}") from None


def oci_layer_type(compression: str | None) -> str:
    """The OCI layer media type for a compression (``None``, ``"gzip"`` or ``"zstd"``)."""
    return _OCI_LAYER_FOR_COMPRESSION[compression]


def docker_layer_type(compression: str | None) -> str:
    """The Docker schema 2 layer media type for a compression (``None``, ``"gzip"`` or ``"zstd"``)."""
    return _DOCKER_LAYER_FOR_COMPRESSION[compression]

"""The pod infrastructure ("pause") image, built offline from Debian's statically linked catatonit.

A pod whose containers share one process namespace needs a process to hold it: the namespace's init, which
must outlive every container and reap the orphans they leave. Upstream uses registry.k8s.io/pause; no registry
is reachable here, so pocketkube builds the equivalent locally, as podman builds its localhost/podman-pause
image from the same binary. `catatonit -P` waits for signals, reaps children and exits on SIGTERM or SIGINT.
The image is deterministic for a given binary, and its tag names the binary's digest.
"""

from __future__ import annotations

import functools
import hashlib
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pocketkube.engine.images.archive import import_rootfs
from pocketkube.engine.images.staticbinary import check_static, tar_entry
from pocketkube.engine.images.store import Image, ImageNotFound, ImageStore

CATATONIT = Path("/usr/bin/catatonit")
PACKAGE = "catatonit"
REPOSITORY = "localhost/pocketkube-pause"
USER = "65535:65535"  # as upstream's pause image: its init needs no privilege
# mount points the runtime fills; the rest of the tree is the binary alone
_DIRECTORIES = {"dev": 0o755, "proc": 0o555, "sys": 0o555}


def pause_ref(catatonit: Path = CATATONIT) -> str:
    found = catatonit.stat()
    return _ref_of(catatonit, found.st_ino, found.st_size, found.st_mtime_ns)


@functools.cache  # hashed once per installed binary, not for every pod sandbox that needs the image
def _ref_of(catatonit: Path, _inode: int, _size: int, _mtime_ns: int) -> str:
    with catatonit.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return f"{REPOSITORY}:{digest[:12]}"


def ensure_pause_image(store: ImageStore, catatonit: Path = CATATONIT) -> Image:
    """The pause image for the installed catatonit, imported if absent."""
    check_static(catatonit, PACKAGE)
    ref = pause_ref(catatonit)
    try:
        return store.resolve(ref)
    except ImageNotFound:
        pass
    mtime = int(catatonit.stat().st_mtime)
    created = datetime.fromtimestamp(mtime, UTC).isoformat().replace("+00:00", "Z")
    with tempfile.TemporaryFile() as rootfs:
        with tarfile.open(fileobj=rootfs, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for directory, mode in sorted(_DIRECTORIES.items()):
                archive.addfile(tar_entry(directory, mtime, mode, tarfile.DIRTYPE))
            binary = tar_entry("catatonit", mtime, 0o755)
            binary.size = catatonit.stat().st_size
            with catatonit.open("rb") as f:
                archive.addfile(binary, f)
        rootfs.seek(0)
        return import_rootfs(store, rootfs, ref, created=created,
                             changes={"Entrypoint": ["/catatonit", "-P"], "User": USER})

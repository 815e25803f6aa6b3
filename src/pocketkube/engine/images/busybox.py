"""The offline base image: a busybox root filesystem built from Debian's statically linked /bin/busybox.

No registry is reachable, so tests, benchmarks and users start from this image. The rootfs and the image
are deterministic for a given busybox binary (its mtime is the timestamp of every file and of the image),
so every machine with the same package builds the same image ID.

    python -m pocketkube.engine.images.busybox OUT.tar [--ref busybox:latest]   # a docker-archive
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pocketkube.engine.images.archive import import_rootfs, save
from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.staticbinary import StaticBinaryUnavailable, check_static, tar_entry
from pocketkube.engine.images.store import Image, ImageNotFound, ImageStore

BUSYBOX = Path("/bin/busybox")
PACKAGE = "busybox-static"
DEFAULT_REF = "busybox:latest"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "www-data:x:33:33:www-data:/var/www:/bin/false\n"
    "nobody:x:65534:65534:nobody:/home:/bin/false\n"
)
_GROUP = "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n"
# directory -> mode; /proc, /sys and /dev stay empty: the runtime mounts them
_DIRECTORIES = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555, "root": 0o700,
                "sbin": 0o755, "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
                "var": 0o755}


def _applets(binary: Path) -> list[str]:
    """Install paths of busybox's applets (``usr/bin/wc``), from ``busybox --list-full``."""
    output = subprocess.run([str(binary), "--list-full"], check=True, capture_output=True, text=True).stdout
    return sorted({line.strip().lstrip("/") for line in output.splitlines() if line.strip()})


def busybox_rootfs_tar(dest: BinaryIO, busybox: Path = BUSYBOX) -> None:
    """Write the root filesystem tar: /bin/busybox, a hard link to it per applet, /etc/passwd and
    /etc/group (root, www-data 33, nobody 65534) and the usual empty directories."""
    check_static(busybox, PACKAGE)
    mtime = int(busybox.stat().st_mtime)
    applets = [path for path in _applets(busybox) if path != "bin/busybox"]
    directories = dict(_DIRECTORIES)
    for path in applets:
        if parent := os.path.dirname(path):  # "linuxrc" lives in the root
            directories.setdefault(parent, 0o755)
    with tarfile.open(fileobj=dest, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for directory in sorted(directories):
            archive.addfile(tar_entry(directory, mtime, directories[directory], tarfile.DIRTYPE))
        binary = tar_entry("bin/busybox", mtime, 0o755)
        binary.size = busybox.stat().st_size
        with busybox.open("rb") as f:
            archive.addfile(binary, f)
        for name, text in (("etc/group", _GROUP), ("etc/passwd", _PASSWD)):
            data = text.encode()
            info = tar_entry(name, mtime, 0o644)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for path in applets:  # after bin/busybox: a hard link must follow its target
            link = tar_entry(path, mtime, 0o755, tarfile.LNKTYPE)
            link.linkname = "bin/busybox"
            archive.addfile(link)


def ensure_busybox_image(store: ImageStore, ref: str = DEFAULT_REF, busybox: Path = BUSYBOX) -> Image:
    """The busybox image under ``ref``, imported (Cmd ``sh``, Env PATH, as the official image) if absent."""
    try:
        return store.resolve(ref)
    except ImageNotFound:
        pass
    check_static(busybox, PACKAGE)
    created = datetime.fromtimestamp(int(busybox.stat().st_mtime), UTC).isoformat().replace("+00:00", "Z")
    with tempfile.TemporaryFile() as rootfs:
        busybox_rootfs_tar(rootfs, busybox)
        rootfs.seek(0)
        return import_rootfs(store, rootfs, ref, changes={"Env": [f"PATH={_PATH}"], "Cmd": ["sh"]},
                             created=created)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pocketkube.engine.images.busybox",
                                     description="Write a busybox image (docker-archive) built from /bin/busybox.")
    parser.add_argument("output", type=Path, help="the archive to write, e.g. busybox.tar")
    parser.add_argument("--ref", default=DEFAULT_REF, help=f"the image name (default {DEFAULT_REF})")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="pocketkube-busybox-") as work:
            store = ImageStore(Path(work) / "images", ContentStore(Path(work) / "content"))
            image = ensure_busybox_image(store, args.ref)
            save(store, [args.ref], args.output)
    except StaticBinaryUnavailable as e:
        parser.exit(1, f"error: {e}\n")
    print(f"{args.output}: {', '.join(image.repo_tags)} {image.id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

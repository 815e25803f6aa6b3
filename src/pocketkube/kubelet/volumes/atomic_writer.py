"""Upstream's AtomicWriter (pkg/volume/util/atomic_writer.go): a set of files that is replaced as a whole.

The files of one version live in a timestamped directory (`..2024_05_01_10_00_00.123456789`); `..data`
is a symlink to the current one, and every top-level name users see is a symlink through it
(`key -> ..data/key`). An update writes a new timestamped directory, points `..data_tmp` at it and
renames that over `..data` (rename is atomic), then removes names that went away and the old directory.
A reader that resolves `..data` once sees one whole version, never a mix.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pocketkube.kubelet.volumes.model import SourceError

DATA_DIR = "..data"
NEW_DATA_DIR = "..data_tmp"
MAX_PATH_LENGTH = 4096
MAX_FILE_NAME_LENGTH = 255


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int
    fs_user: int | None = None


def validate_path(target: str) -> None:
    """Upstream's validatePath: a relative path without '..' elements, not starting with '..'."""
    if target == "":
        raise SourceError(f'invalid path: must not be empty: "{target}"')
    if target.startswith("/"):
        raise SourceError(f"invalid path: must be relative path: {target}")
    if len(target) > MAX_PATH_LENGTH:
        raise SourceError(f"invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters")
    items = target.split("/")
    for item in items:
        if item == "..":
            raise SourceError(f"invalid path: must not contain '..': {target}")
        if len(item) > MAX_FILE_NAME_LENGTH:
            raise SourceError(f"invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} "
                              "characters")
    if items[0].startswith("..") and len(items[0]) > 2:
        raise SourceError(f"invalid path: must not start with '..': {target}")


def clean_path(path: str) -> str:
    """Go's filepath.Clean for the relative paths validate_path accepts."""
    return os.path.normpath(path)


class AtomicWriter:
    def __init__(self, target_dir: Path) -> None:
        self.target_dir = target_dir

    def write(self, payload: dict[str, FileProjection],
              set_perms: Callable[[str], None] | None = None) -> bool:
        """Make the directory hold exactly `payload`; returns whether a new version was written.

        `set_perms(timestamped_dir_name)` runs after the files are written and before they become
        visible (fsGroup ownership)."""
        for key in payload:
            validate_path(key)
        clean = {clean_path(key): projection for key, projection in payload.items()}
        data_link = self.target_dir / DATA_DIR
        try:
            old_ts_dir = os.readlink(data_link)
        except FileNotFoundError:
            old_ts_dir = ""
        old_ts_path = self.target_dir / old_ts_dir
        to_remove: set[str] = set()
        should_write = True
        if old_ts_dir:
            to_remove = self._paths_to_remove(clean, old_ts_path)
            if not to_remove and not _payload_differs(clean, old_ts_path):
                should_write = False
                old_ts_dir = ""  # still current: keep it
        if should_write:
            ts_dir = self._new_timestamp_dir()
            try:
                _write_payload(clean, ts_dir)
                if set_perms is not None:
                    set_perms(ts_dir.name)
                new_link = self.target_dir / NEW_DATA_DIR
                new_link.unlink(missing_ok=True)  # left by a write that crashed midway
                os.symlink(ts_dir.name, new_link)
                os.rename(new_link, data_link)
            except BaseException:
                shutil.rmtree(ts_dir, ignore_errors=True)
                raise
        self._create_user_visible_files(clean)
        self._remove_user_visible_paths(to_remove)
        if old_ts_dir:
            shutil.rmtree(old_ts_path)
        return should_write

    @staticmethod
    def _paths_to_remove(payload: dict[str, FileProjection], old_ts_path: Path) -> set[str]:
        current: set[str] = set()
        for directory, subdirs, files in os.walk(old_ts_path):
            relative = os.path.relpath(directory, old_ts_path)
            for name in subdirs + files:
                current.add(name if relative == "." else f"{relative}/{name}")
        wanted: set[str] = set()
        for path in payload:
            # every parent directory of a new file stays too
            while path:
                wanted.add(path)
                path = os.path.dirname(path)
        return current - wanted

    def _new_timestamp_dir(self) -> Path:
        prefix = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
        while True:
            candidate = self.target_dir / f"{prefix}{random.randrange(10**9)}"
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            # group and others must be able to traverse, whatever the umask
            candidate.chmod(0o755)
            return candidate

    def _create_user_visible_files(self, payload: dict[str, FileProjection]) -> None:
        for path in payload:
            top = path.split("/", 1)[0]
            visible = self.target_dir / top
            try:
                os.readlink(visible)
            except FileNotFoundError:
                os.symlink(f"{DATA_DIR}/{top}", visible)

    def _remove_user_visible_paths(self, paths: set[str]) -> None:
        for path in paths:
            if "/" not in path:  # only the symlinks at the volume's root are user-visible
                (self.target_dir / path).unlink(missing_ok=True)


def _payload_differs(payload: dict[str, FileProjection], old_ts_path: Path) -> bool:
    for path, projection in payload.items():
        try:
            if (old_ts_path / path).read_bytes() != projection.data:
                return True
        except FileNotFoundError:
            return True
    return False


def _write_payload(payload: dict[str, FileProjection], directory: Path) -> None:
    for path, projection in payload.items():
        full = directory / path
        full.parent.mkdir(mode=0o777, parents=True, exist_ok=True)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, projection.mode & 0o777)
        with os.fdopen(fd, "wb") as file:
            file.write(projection.data)
            # open() applied the umask to the mode
            os.fchmod(file.fileno(), projection.mode & 0o777)
            if projection.fs_user is not None:
                os.fchown(file.fileno(), projection.fs_user, -1)

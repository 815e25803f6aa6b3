"""The node's half of the local-path provisioner's reclaim: once the controller has deleted a released
volume that lives on this node, its directory is removed here, then the volume's finalizer, which lets the
object go (pocketkube.api.localpath). Only a directory that the provisioner's naming makes for that very volume
is ever removed, whatever a volume's spec says."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from pocketkube.api import localpath
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]

PVS = ResourceCatalog().resource("", "v1", "persistentvolumes")
HOSTNAME_LABEL = "kubernetes.io/hostname"
RETRY_DELAYS = (1.0, 5.0, 30.0)  # then the next change of the volume tries again


def _on_node(volume: Obj, hostname: str) -> bool:
    terms = (((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")
    return any(expression.get("key") == HOSTNAME_LABEL and expression.get("operator") == "In"
               and hostname in (expression.get("values") or [])
               for term in terms or [] for expression in term.get("matchExpressions") or [])


def reclaims_here(volume: Obj, hostname: str) -> bool:
    """Whether the volume is a deleted local-path volume of this node that waits for its directory to go."""
    meta = volume.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and localpath.FINALIZER in (meta.get("finalizers") or []) and \
        (meta.get("annotations") or {}).get(localpath.ANN_PROVISIONED_BY) == localpath.PROVISIONER and \
        _on_node(volume, hostname)


def removable_directory(volume: Obj) -> Path | None:
    """The volume's directory if it is one the provisioner made, else None: a volume written by hand must not
    make the node delete anything else.

    The storage root is the controller manager's setting, which a node (an agent with its own data directory)
    does not know; so rather than the parent, the path itself is checked. It must be absolute and normalized
    (no `..` to walk out of the directory named), named as the provisioner names this volume's directory
    (after the volume and its claim), not a symlink, not the root of a mounted filesystem, and not directly in
    a system directory. The volume has already shown the provisioner's annotation and finalizer
    (reclaims_here)."""
    spec = volume.get("spec") or {}
    path = (spec.get("hostPath") or {}).get("path") or ""
    claim = spec.get("claimRef") or {}
    # normpath keeps a leading "//" (POSIX leaves its meaning open), which would hide a parent "/"
    if not (path and claim and os.path.isabs(path) and os.path.normpath(path) == path) or path.startswith("//"):
        return None
    expected = localpath.directory_name(volume["metadata"]["name"], claim.get("namespace") or "",
                                        claim.get("name") or "")
    if os.path.basename(path) != expected or os.path.dirname(path) in localpath.SYSTEM_DIRECTORIES:
        return None
    if os.path.islink(path) or os.path.ismount(path):
        return None
    return Path(path)


class LocalPathReclaimer:
    def __init__(self, client: Client, hostname: str) -> None:
        self.client = client
        self.hostname = hostname
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def on_volume(self, volume: Obj) -> None:
        """Informer handler: starts the reclaim of a deleted volume of this node (once at a time)."""
        name = volume["metadata"]["name"]
        if name in self._busy or not reclaims_here(volume, self.hostname):
            return
        self._busy.add(name)
        task = asyncio.get_running_loop().create_task(self._reclaim(volume), name=f"reclaim {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reclaim(self, volume: Obj) -> None:
        name = volume["metadata"]["name"]
        try:
            for delay in (*RETRY_DELAYS, None):
                try:
                    await self.reclaim(volume)
                    return
                except (OSError, APIError) as err:
                    if delay is None:
                        log.warning("giving up reclaiming PersistentVolume %s for now: %s", name, err)
                        return
                    log.info("reclaiming PersistentVolume %s failed (%s), again in %s s", name, err, delay)
                    await asyncio.sleep(delay)
                    try:
                        volume = await self.client.get(PVS, name)
                    except APIError as gone:
                        if gone.not_found:
                            return
                        raise
        finally:
            self._busy.discard(name)

    async def reclaim(self, volume: Obj) -> None:
        """Removes the volume's directory (a refused path is left alone), then this node's finalizer."""
        if not reclaims_here(volume, self.hostname):
            return
        meta = volume["metadata"]
        directory = removable_directory(volume)
        if directory is None:
            log.warning("PersistentVolume %s: not removing %s, not a directory of the local-path provisioner",
                        meta["name"], ((volume.get("spec") or {}).get("hostPath") or {}).get("path"))
        else:
            await asyncio.to_thread(_remove_tree, directory)
        remaining = [f for f in meta.get("finalizers") or [] if f != localpath.FINALIZER]
        try:
            # the resourceVersion makes it a compare-and-swap: other finalizers may change meanwhile
            await self.client.patch(PVS, meta["name"], {"metadata": {"finalizers": remaining,
                                                                     "resourceVersion": meta["resourceVersion"]}})
        except APIError as err:
            if not err.not_found:
                raise


def _remove_tree(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # never made (no pod used it), or removed by an earlier try
        shutil.rmtree(directory)

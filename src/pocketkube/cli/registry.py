"""`pocketkube registry` (serve, garbage-collect), `push`, `pull`, `login`, `logout`: argument parsing and
output like Docker's; the work is done by pocketkube.engine.registry."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.reference import InvalidReference, parse_reference
from pocketkube.engine.images.store import ImageNotFound, ImageStore, InvalidImage, host_platform
from pocketkube.engine.registry.client import ProgressEvent, RegistryClient
from pocketkube.engine.registry.credentials import (
    CredentialError,
    CredentialStore,
    config_key,
    normalize_registry,
)
from pocketkube.engine.registry.errors import RegistryError
from pocketkube.engine.registry.hosts import RegistryHosts
from pocketkube.engine.registry.server import RegistryConfig, start_registry
from pocketkube.engine.registry.storage import RegistryStorage

DEFAULT_DATA_DIR = Path("/var/lib/pocketkube")
_MOVING = ("Downloading", "Pushing")
_BAR_WIDTH = 50

# Errors a user can cause: printed as "Error: ..." with exit status 1.
USER_ERRORS = (RegistryError, ImageNotFound, InvalidImage, InvalidReference, CredentialError, ValueError, OSError)


def _data_dir_default() -> Path:
    return Path(os.environ.get("POCKETKUBE_DATA_DIR", DEFAULT_DATA_DIR))


def _add_data_dir(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    # A nested command (`registry garbage-collect`) only overrides its parent's value when given.
    parser.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS if nested else _data_dir_default(),
                        help="state directory (default: $POCKETKUBE_DATA_DIR or /var/lib/pocketkube)")


def add_registry_commands(sub: argparse._SubParsersAction) -> None:
    """Add `registry`, `push`, `pull`, `login` and `logout` to a subparsers action."""
    registry = sub.add_parser("registry", help="run an image registry (OCI Distribution API)")
    _add_data_dir(registry)
    registry.add_argument("--listen", default="127.0.0.1:5000", metavar="HOST:PORT",
                          help="address to serve on (%(default)s)")
    registry.add_argument("--htpasswd", type=Path, default=None, metavar="FILE",
                          help="require logins from the users of this htpasswd file (bcrypt, htpasswd -B)")
    registry.add_argument("--tls-cert", type=Path, default=None, metavar="FILE", help="serve HTTPS with this certificate")
    registry.add_argument("--tls-key", type=Path, default=None, metavar="FILE", help="key of --tls-cert")
    registry.add_argument("--allow-anonymous-pull", action="store_true",
                          help="with --htpasswd: let clients without credentials pull")
    registry.set_defaults(registry_handler=_serve)
    actions = registry.add_subparsers(dest="registry_command", metavar="[garbage-collect]")
    collect = actions.add_parser("garbage-collect", help="delete blobs no manifest references (registry stopped)")
    _add_data_dir(collect, nested=True)
    collect.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    collect.set_defaults(registry_handler=_garbage_collect)

    push = sub.add_parser("push", help="upload an image to a registry (like docker push)")
    _add_data_dir(push)
    _add_insecure(push)
    push.add_argument("name", metavar="NAME[:TAG]")
    push.set_defaults(registry_handler=_push)

    pull = sub.add_parser("pull", help="download an image from a registry (like docker pull)")
    _add_data_dir(pull)
    _add_insecure(pull)
    pull.add_argument("--platform", default=None, metavar="OS/ARCH[/VARIANT]",
                      help="platform to pull from a multi-platform image (default: this machine's)")
    pull.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    pull.set_defaults(registry_handler=_pull)

    login = sub.add_parser("login", help="log in to a registry (like docker login)")
    _add_data_dir(login)
    _add_insecure(login)
    login.add_argument("-u", "--username", default=None)
    login.add_argument("-p", "--password", default=None)
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    login.add_argument("registry", nargs="?", default="docker.io", metavar="REGISTRY")
    login.set_defaults(registry_handler=_login)

    logout = sub.add_parser("logout", help="forget the credentials of a registry (like docker logout)")
    logout.add_argument("registry", nargs="?", default="docker.io", metavar="REGISTRY")
    logout.set_defaults(registry_handler=_logout)


def _add_insecure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                        help="registry (host[:port] or CIDR) reachable over plain HTTP or unverified TLS "
                             "(loopback registries always are); repeatable")


def run_registry_command(args: argparse.Namespace) -> int:
    try:
        return args.registry_handler(args)
    except KeyboardInterrupt:
        return 130
    except USER_ERRORS as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1


# --- server --------------------------------------------------------------------------------------------

def _serve(args: argparse.Namespace) -> int:
    config = RegistryConfig(data_dir=args.data_dir, listen=args.listen, htpasswd=args.htpasswd,
                            tls_cert=args.tls_cert, tls_key=args.tls_key,
                            allow_anonymous_pull=args.allow_anonymous_pull)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        running = await start_registry(config)
        try:
            await stop.wait()
        finally:
            await running.stop()

    asyncio.run(serve())
    return 0


def _garbage_collect(args: argparse.Namespace) -> int:
    report = RegistryStorage(RegistryConfig(args.data_dir).root).garbage_collect(dry_run=args.dry_run)
    verb = "eligible for deletion" if args.dry_run else "deleted"
    for digest, size in report.deleted:
        print(f"blob {verb}: {digest} ({size} bytes)")
    for upload_id in report.stale_uploads:
        print(f"abandoned upload {verb}: {upload_id}")
    print(f"{report.marked} blobs marked, {len(report.deleted)} blobs {verb} ({report.freed} bytes), "
          f"{len(report.recent)} unreferenced blobs younger than an hour kept")
    return 0


# --- client commands -----------------------------------------------------------------------------------

def _image_store(data_dir: Path) -> ImageStore:
    root = data_dir / "engine"
    return ImageStore(root / "images", ContentStore(root / "content"))


def _parse_platform(text: str | None) -> tuple[str, ...]:
    if text is None:
        return host_platform()
    parts = tuple(text.split("/"))
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
    return parts


def _push(args: argparse.Namespace) -> int:
    store = _image_store(args.data_dir)
    ref = parse_reference(args.name)
    try:
        image = store.resolve(args.name)
    except ImageNotFound:
        raise ValueError(f"An image does not exist locally with the tag: {ref.familiar_name()}") from None
    printer = ProgressPrinter(sys.stdout)
    client = RegistryClient(credentials=CredentialStore(), insecure_registries=args.insecure_registry,
                            progress=printer, hosts=RegistryHosts.for_data_dir(args.data_dir))
    print(f"The push refers to repository [{ref.name}]", flush=True)
    digest = asyncio.run(client.push(store, args.name))
    print(f"{ref.tag or 'latest'}: digest: {digest} size: {store.content.size(image.manifest_digest)}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    store = _image_store(args.data_dir)
    platform = _parse_platform(args.platform)
    ref = parse_reference(args.name)
    try:
        before = store.resolve(str(ref)).manifest_digest
    except ImageNotFound:
        before = None
    if ref.digest is None:
        print(f"{ref.tag}: Pulling from {ref.path}", flush=True)
    client = RegistryClient(credentials=CredentialStore(), insecure_registries=args.insecure_registry,
                            progress=ProgressPrinter(sys.stdout), hosts=RegistryHosts.for_data_dir(args.data_dir))
    image = asyncio.run(client.pull(store, args.name, platform=platform))
    print(f"Digest: {ref.digest or image.index_digest or image.manifest_digest}")
    news = "Image is up to date" if before == image.manifest_digest else "Downloaded newer image"
    print(f"Status: {news} for {ref.familiar()}")
    print(str(ref))
    return 0


def _login(args: argparse.Namespace) -> int:
    username = args.username
    if args.password_stdin:
        if args.password is not None:
            raise ValueError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise ValueError("Must provide --username with --password-stdin")
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    elif args.password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
        password = args.password
    else:
        username = username or input("Username: ")
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise ValueError("Username and password are required")
    client = RegistryClient(credentials=CredentialStore(), insecure_registries=args.insecure_registry,
                            hosts=RegistryHosts.for_data_dir(args.data_dir))
    asyncio.run(client.login(args.registry, username, password))
    print("Login Succeeded")
    return 0


def _logout(args: argparse.Namespace) -> int:
    if CredentialStore().remove(args.registry):
        print(f"Removing login credentials for {config_key(args.registry)}")
    else:
        print(f"Not logged in to {normalize_registry(args.registry)}")
    return 0


# --- progress ------------------------------------------------------------------------------------------

class ProgressPrinter:
    """Docker-like layer lines. On a terminal each layer keeps one line, redrawn with a progress bar; in a
    file or pipe, one plain line per status change (no byte counts), as Docker prints in CI logs."""

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._order: list[str] = []
        self._status: dict[str, str] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if not self.tty:
            if event.status not in _MOVING and self._status.get(event.id) != event.status:
                self.stream.write(f"{event.id}: {event.status}\n")
                self.stream.flush()
            self._status[event.id] = event.status
            return
        line = f"{event.id}: {event.status}"
        if event.status in _MOVING and event.total:
            line += f" {_bar(event.current, event.total)}"
        if event.id not in self._status:
            self._order.append(event.id)
            self.stream.write(line + "\n")
        else:
            up = len(self._order) - self._order.index(event.id)
            self.stream.write(f"\x1b[{up}A\r\x1b[2K{line}\x1b[{up}B\r")
        self._status[event.id] = event.status
        self.stream.flush()


def _bar(current: int, total: int) -> str:
    filled = min(_BAR_WIDTH, _BAR_WIDTH * current // total)
    arrow = ">" if filled < _BAR_WIDTH else ""
    return f"[{'=' * filled}{arrow}{' ' * (_BAR_WIDTH - filled - len(arrow))}]  {_human(current)}/{_human(total)}"


def _human(size: float) -> str:
    """Sizes as Docker prints them: decimal units, three significant digits (``1.23MB``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}TB"

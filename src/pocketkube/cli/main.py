"""`pocketkube` command line: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from pocketkube import KUBERNETES_VERSION, __version__

DEFAULT_DATA_DIR = Path("/var/lib/pocketkube")


def _server_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="run the API server (control plane)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="state directory (%(default)s)")
    p.add_argument("--bind-address", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument("--https-port", type=int, default=6443, help="HTTPS port (%(default)s)")
    p.add_argument("--datastore-endpoint", default="",
                   help="sqlite:///PATH (default DATA_DIR/db/state.db) or http://HOST:2379[,http://HOST2:2379]")
    p.add_argument("--tls-san", action="append", default=[], metavar="NAME",
                   help="extra name or IP for the serving certificate (repeatable)")
    p.add_argument("--write-kubeconfig", type=Path, default=None, metavar="PATH",
                   help="also write the admin kubeconfig here (besides DATA_DIR/kubeconfig.yaml)")
    p.add_argument("--service-cidr", default="10.43.0.0/16", help="service cluster IP range (%(default)s)")
    p.add_argument("--cluster-cidr", default="10.42.0.0/16", help="pod IP range (%(default)s)")
    p.add_argument("--compaction-interval", type=float, default=300.0, metavar="SECONDS",
                   help="how often storage history is compacted (%(default)s)")
    p.add_argument("--disable-controller-manager", action="store_true",
                   help="do not run the controller manager in this process")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _controller_manager_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller-manager", help="run the controller manager against an API server")
    p.add_argument("--kubeconfig", type=Path, default=DEFAULT_DATA_DIR / "kubeconfig.yaml",
                   help="credentials and address of the API server (%(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(stop)

    try:
        asyncio.run(main())
    except OSError as err:
        logging.getLogger("pocketkube").error("cannot start: %s", err)
        return 1
    return 0


def _run_controller_manager(args: argparse.Namespace) -> int:
    from pocketkube.client.rest import ClientConfig
    from pocketkube.launcher import run_controller_manager

    config = ClientConfig.from_kubeconfig(args.kubeconfig)
    return _until_signalled(lambda stop: run_controller_manager(config, stop))


def _run_server(args: argparse.Namespace) -> int:
    from pocketkube.apiserver.server import ServerConfig
    from pocketkube.launcher import run_server

    config = ServerConfig(
        data_dir=args.data_dir, bind_address=args.bind_address, https_port=args.https_port,
        datastore_endpoint=args.datastore_endpoint, tls_sans=args.tls_san,
        write_kubeconfig=args.write_kubeconfig, service_cidr=args.service_cidr,
        cluster_cidr=args.cluster_cidr, compaction_interval=args.compaction_interval)

    return _until_signalled(lambda stop: run_server(config, stop,
                                                   controller_manager=not args.disable_controller_manager))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # kubectl's own flags must pass through untouched, so it is dispatched before argparse sees them.
    if argv[:1] == ["kubectl"]:
        from pocketkube.cli.kubectl import run_kubectl

        data_dir = DEFAULT_DATA_DIR
        rest = argv[1:]
        if rest[:1] and rest[0].startswith("--data-dir="):
            data_dir, rest = Path(rest[0].split("=", 1)[1]), rest[1:]
        return run_kubectl(rest, data_dir=data_dir)

    parser = argparse.ArgumentParser(prog="pocketkube", description="Kubernetes and its container engine, "
                                     "in Python")
    parser.add_argument("--version", action="version",
                        version=f"pocketkube {__version__} (Kubernetes {KUBERNETES_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _server_parser(sub)
    _controller_manager_parser(sub)
    sub.add_parser("kubectl", help="run kubectl against this machine's cluster (pocketkube kubectl ARGS...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "server":
        return _run_server(args)
    if args.command == "controller-manager":
        return _run_controller_manager(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

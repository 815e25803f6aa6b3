"""`pocketkube` command line: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketkube import KUBERNETES_VERSION, __version__

if TYPE_CHECKING:
    import asyncio
    import logging

    from pocketkube.kubelet.agent import KubeletConfig
    from pocketkube.launcher import ControllerManagerOptions

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
    p.add_argument("--default-local-storage-path", type=Path, default=None, metavar="PATH",
                   help="where the local-path provisioner puts volumes (default DATA_DIR/storage)")
    p.add_argument("--disable-controller-manager", action="store_true",
                   help="do not start the controller manager with the server")
    _controller_flags(p)
    p.add_argument("--disable-scheduler", action="store_true", help="do not start the scheduler with the server")
    p.add_argument("--disable-admission-plugins", default="", metavar="NAMES",
                   help="comma-separated admission plugins to turn off (all run by default)")
    p.add_argument("--disable-agent", action="store_true",
                   help="do not run a kubelet (this machine as a node) with the server")
    _node_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _controller_flags(p: argparse.ArgumentParser) -> None:
    """kube-controller-manager's flags of its controllers, by upstream's names, syntax and defaults; `server`
    passes them to the controller manager it starts."""
    p.add_argument("--node-monitor-grace-period", default="40s", metavar="DURATION",
                   help="how long a running node may go without heartbeats before it is marked unhealthy "
                        "(Ready=Unknown) (%(default)s)")
    p.add_argument("--node-startup-grace-period", default="1m0s", metavar="DURATION",
                   help="the same for a node that has not reported Ready yet (%(default)s)")
    p.add_argument("--terminated-pod-gc-threshold", default="12500", metavar="N",
                   help="terminated pods kept before the pod garbage collector deletes the oldest; <= 0 keeps "
                        "them all (%(default)s)")


def _node_flags(p: argparse.ArgumentParser) -> None:
    """The flags of a real node's kubelet that `server`, `agent` and `kubelet` share."""
    p.add_argument("--node-name", default="", help="this node's name (default: the host name, lower-cased)")
    p.add_argument("--node-ip", default="", help="this node's InternalIP (default: the default route's address)")
    p.add_argument("--kubelet-port", type=int, default=10250, help="port of the kubelet's HTTPS API (%(default)s)")
    p.add_argument("--cni-bridge", default="pkcni0", help="the bridge pods are attached to (%(default)s)")
    _node_housekeeping_flags(p)


def _node_housekeeping_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-gc-high-threshold", type=int, default=85, metavar="PERCENT",
                   help="disk usage that starts removing unused images (%(default)s)")
    p.add_argument("--image-gc-low-threshold", type=int, default=80, metavar="PERCENT",
                   help="disk usage image garbage collection brings it down to (%(default)s)")
    p.add_argument("--container-log-max-size", default="10Mi", metavar="QUANTITY",
                   help="size at which a container's log file is rotated (%(default)s)")
    p.add_argument("--container-log-max-files", type=int, default=5, metavar="N",
                   help="log files kept per container, the live one included; at least 2 (%(default)s)")


def _kubelet_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kubelet", help="run the node agent (kubelet) against an API server")
    p.add_argument("--kubeconfig", type=Path, required=True,
                   help="the node's credentials (CN=system:node:NAME) and the API server's address")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="state directory (%(default)s)")
    p.add_argument("--node-name", default="", help="this node's name (default: the host name, lower-cased)")
    p.add_argument("--node-ip", default="", help="this node's InternalIP (default: the default route's address)")
    p.add_argument("--port", type=int, default=10250, help="port of the kubelet's HTTPS API (%(default)s)")
    p.add_argument("--cni-bridge", default="pkcni0", help="the bridge pods are attached to (%(default)s)")
    p.add_argument("--cluster-cidr", default="10.42.0.0/16",
                   help="pod IP range the node's podCIDR is cut from when it has none (%(default)s)")
    p.add_argument("--service-cidr", default="10.43.0.0/16",
                   help="service IP range; the cluster DNS is its 10th address unless --cluster-dns (%(default)s)")
    p.add_argument("--cluster-dns", default="", metavar="IP[,IP]", help="DNS server(s) of ClusterFirst pods")
    p.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain (%(default)s)")
    p.add_argument("--control-plane", action="store_true",
                   help="label the node node-role.kubernetes.io/control-plane (the server's own node)")
    _node_housekeeping_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _kubelet_config(args: argparse.Namespace, data_dir: Path) -> KubeletConfig:
    from pocketkube.kubelet.agent import KubeletConfig
    from pocketkube.kubelet.node import default_node_ip, default_node_name
    from pocketkube.kubelet.podnetwork import default_cluster_dns

    dns = [ip.strip() for ip in getattr(args, "cluster_dns", "").split(",") if ip.strip()] or \
        [default_cluster_dns(getattr(args, "service_cidr", "10.43.0.0/16"))]
    return KubeletConfig(
        data_dir=data_dir, node_name=args.node_name or default_node_name(), node_ip=args.node_ip or default_node_ip(),
        port=getattr(args, "port", None) or args.kubelet_port, cluster_cidr=getattr(args, "cluster_cidr", "10.42.0.0/16"),
        cluster_dns=dns, cluster_domain=getattr(args, "cluster_domain", "cluster.local"), cni_bridge=args.cni_bridge,
        control_plane=getattr(args, "control_plane", False), **_housekeeping_policies(args))


def _housekeeping_policies(args: argparse.Namespace) -> dict[str, Any]:
    """The node's image GC and log rotation settings from its flags; ValueError names a bad one."""
    from pocketkube.kubelet.imagegc import ImageGCPolicy
    from pocketkube.kubelet.logrotation import LogRotationPolicy

    return {"image_gc": ImageGCPolicy(high_threshold=args.image_gc_high_threshold,
                                      low_threshold=args.image_gc_low_threshold),
            "log_rotation": LogRotationPolicy.parse(args.container_log_max_size, args.container_log_max_files)}


def _run_kubelet(args: argparse.Namespace) -> int:
    from pocketkube.client.rest import ClientConfig
    from pocketkube.kubelet.agent import run_kubelet

    try:
        client_config = ClientConfig.from_kubeconfig(args.kubeconfig)
        config = _kubelet_config(args, args.data_dir)
    except (OSError, ValueError) as err:
        _logger().error("%s", err)
        return 2
    return _until_signalled(lambda stop: run_kubelet(client_config, config, stop))


def _controller_manager_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller-manager", help="run the controller manager against an API server")
    p.add_argument("--kubeconfig", type=Path, default=DEFAULT_DATA_DIR / "kubeconfig.yaml",
                   help="credentials and address of the API server (%(default)s)")
    p.add_argument("--default-local-storage-path", type=Path, default=DEFAULT_DATA_DIR / "storage", metavar="PATH",
                   help="where the local-path provisioner puts volumes (%(default)s)")
    p.add_argument("--cluster-signing-cert-file", type=Path, default=None, metavar="FILE",
                   help="CA certificate (PEM) that signs approved CertificateSigningRequests of the built-in "
                        "signers; without it and --cluster-signing-key-file nothing signs them")
    p.add_argument("--cluster-signing-key-file", type=Path, default=None, metavar="FILE",
                   help="the private key (PEM) of --cluster-signing-cert-file")
    _controller_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _scheduler_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scheduler", help="run the scheduler against an API server")
    p.add_argument("--kubeconfig", type=Path, default=DEFAULT_DATA_DIR / "kubeconfig.yaml",
                   help="credentials and address of the API server (%(default)s)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) file")
    p.add_argument("--leader-elect", default=None, choices=("true", "false"),
                   help="take the kube-system/kube-scheduler Lease before scheduling (default: from --config, "
                        "else true)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _run_scheduler(args: argparse.Namespace) -> int:
    from pocketkube.client.rest import ClientConfig
    from pocketkube.scheduler.scheduler import run_standalone

    try:
        config = ClientConfig.from_kubeconfig(args.kubeconfig)
    except (OSError, ValueError) as err:
        _logger().error("%s", err)
        return 2
    leader_elect = None if args.leader_elect is None else args.leader_elect == "true"
    return _until_signalled(lambda stop: run_standalone(config, stop, args.config, leader_elect))


def _agent_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="join a cluster as a node: a real kubelet, or --simulate N kwok-style nodes")
    p.add_argument("--server", required=True, help="API server URL, https://HOST:PORT")
    p.add_argument("--token", required=True, help="the server's join token (its DATA_DIR/node-token)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"agent state directory (keeps the server CA; default for a real node {DEFAULT_DATA_DIR})")
    p.add_argument("--simulate", type=int, default=0, metavar="N",
                   help="run N simulated nodes (no containers), like kwok, instead of a real kubelet")
    _node_flags(p)
    p.add_argument("--node-name-prefix", default="sim-", help="node names are PREFIX0…PREFIX<N-1> (%(default)s)")
    p.add_argument("--cpu", default="32", help="cpu capacity of each node (%(default)s)")
    p.add_argument("--memory", default="256Gi", help="memory capacity of each node (%(default)s)")
    p.add_argument("--ephemeral-storage", default="100Gi", help="ephemeral-storage capacity (%(default)s)")
    p.add_argument("--pods", type=int, default=110, help="pod capacity of each node (%(default)s)")
    p.add_argument("--labels", default="", metavar="K=V,...", help="extra node labels")
    p.add_argument("--taints", default="", metavar="K[=V]:EFFECT,...", help="taints to register with")
    p.add_argument("--ready-delay", type=float, default=0.0, metavar="SECONDS",
                   help="seconds from a container's start until the pod is Ready (%(default)s)")
    p.add_argument("--lease-interval", type=float, default=10.0, metavar="SECONDS",
                   help="node Lease renewal period (%(default)s)")
    p.add_argument("--status-interval", type=float, default=60.0, metavar="SECONDS",
                   help="node status report period (%(default)s)")
    p.add_argument("--cluster-cidr", default="10.42.0.0/16", help="pod CIDRs are cut from this (%(default)s)")
    p.add_argument("--node-cidr-mask-size", type=int, default=24, help="size of each node's podCIDR (%(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _run_agent(args: argparse.Namespace) -> int:
    if not args.simulate:
        return _run_real_agent(args)
    from pocketkube.kubelet.simulated import SimulationConfig, parse_labels, parse_taints, run_simulated_agent

    try:
        config = SimulationConfig(
            name_prefix=args.node_name_prefix, cpu=args.cpu, memory=args.memory,
            ephemeral_storage=args.ephemeral_storage, pods=args.pods, labels=parse_labels(args.labels),
            taints=parse_taints(args.taints), pod_ready_delay=args.ready_delay, lease_interval=args.lease_interval,
            status_interval=args.status_interval, cluster_cidr=args.cluster_cidr,
            node_cidr_mask=args.node_cidr_mask_size)
    except ValueError as err:
        _logger().error("%s", err)
        return 2
    try:
        return _until_signalled(lambda stop: run_simulated_agent(args.server, args.token, args.simulate, config,
                                                                 stop, data_dir=args.data_dir))
    except ValueError as err:  # a bad token, or a CA that does not match it
        _logger().error("cannot join %s: %s", args.server, err)
        return 1


def _run_real_agent(args: argparse.Namespace) -> int:
    from pocketkube.kubelet.agent import run_joined_kubelet

    data_dir = args.data_dir or DEFAULT_DATA_DIR
    try:
        config = _kubelet_config(args, data_dir)
    except ValueError as err:
        _logger().error("%s", err)
        return 2
    try:
        return _until_signalled(lambda stop: run_joined_kubelet(args.server, args.token, config, stop))
    except ValueError as err:  # a bad token, or a CA that does not match it
        _logger().error("cannot join %s: %s", args.server, err)
        return 1


def _logger() -> logging.Logger:
    import logging  # not at the top: the engine's exit command starts without it

    return logging.getLogger("pocketkube")


def _until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run a long-lived component until SIGTERM/SIGINT, on uvloop: its event loop and TLS transport cost a
    good deal less per request than asyncio's own, and the API server's loop is what limits its throughput."""
    import asyncio
    import signal

    import uvloop

    from pocketkube.client.leaderelection import LeaderElectionLost

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(stop)

    try:
        uvloop.run(main())
    except OSError as err:
        _logger().error("cannot start: %s", err)
        return 1
    except LeaderElectionLost as err:
        # As kube-controller-manager and kube-scheduler: a component that lost its lease exits, and its
        # supervisor starts it again as a fresh candidate.
        _logger().error("leaderelection lost: %s; exiting", err)
        return 1
    return 0


def controller_manager_options(args: argparse.Namespace, storage_path: Path) -> ControllerManagerOptions:
    """The controller manager's settings from `controller-manager`'s or `server`'s flags; ValueError (one
    line, as pflag words it for a bad value) names a bad one."""
    from pocketkube.api import localpath
    from pocketkube.cli.flags import duration_flag, int32_flag
    from pocketkube.launcher import ControllerManagerOptions

    # `server` has no signing flags: it passes its own CA.
    signing_cert_file = getattr(args, "cluster_signing_cert_file", None)
    signing_key_file = getattr(args, "cluster_signing_key_file", None)
    if (signing_cert_file is None) != (signing_key_file is None):
        raise ValueError("--cluster-signing-cert-file and --cluster-signing-key-file go together")
    return ControllerManagerOptions(
        local_storage_path=localpath.storage_root(storage_path), signing_cert_file=signing_cert_file,
        signing_key_file=signing_key_file,
        node_monitor_grace_period=duration_flag("--node-monitor-grace-period", args.node_monitor_grace_period),
        node_startup_grace_period=duration_flag("--node-startup-grace-period", args.node_startup_grace_period),
        terminated_pod_gc_threshold=int32_flag("--terminated-pod-gc-threshold", args.terminated_pod_gc_threshold))


def _run_controller_manager(args: argparse.Namespace) -> int:
    from pocketkube.client.rest import ClientConfig
    from pocketkube.launcher import run_controller_manager

    try:
        options = controller_manager_options(args, args.default_local_storage_path)
        config = ClientConfig.from_kubeconfig(args.kubeconfig)
    except (OSError, ValueError) as err:
        _logger().error("%s", err)
        return 2
    return _until_signalled(lambda stop: run_controller_manager(config, options, stop))


def _run_server(args: argparse.Namespace) -> int:
    from pocketkube.apiserver.server import ServerConfig
    from pocketkube.launcher import run_server

    config = ServerConfig(
        data_dir=args.data_dir, bind_address=args.bind_address, https_port=args.https_port,
        datastore_endpoint=args.datastore_endpoint, tls_sans=args.tls_san,
        write_kubeconfig=args.write_kubeconfig, service_cidr=args.service_cidr,
        cluster_cidr=args.cluster_cidr, compaction_interval=args.compaction_interval,
        disable_admission_plugins=[n.strip() for n in args.disable_admission_plugins.split(",") if n.strip()])

    controller_manager = None
    if not args.disable_controller_manager:
        try:
            controller_manager = controller_manager_options(args, args.default_local_storage_path or
                                                            args.data_dir / "storage")
        except ValueError as err:
            _logger().error("%s", err)
            return 2
    agent = None
    if not args.disable_agent:
        from pocketkube.kubelet.node import default_node_ip, default_node_name
        from pocketkube.launcher import AgentOptions

        try:
            _housekeeping_policies(args)  # checked here: the server's kubelet gets them as flags
        except ValueError as err:
            _logger().error("%s", err)
            return 2
        agent = AgentOptions(node_name=args.node_name or default_node_name(), node_ip=args.node_ip or
                             default_node_ip(), kubelet_port=args.kubelet_port, cni_bridge=args.cni_bridge,
                             image_gc_thresholds=(args.image_gc_high_threshold, args.image_gc_low_threshold),
                             container_log=(args.container_log_max_size, args.container_log_max_files))
    return _until_signalled(lambda stop: run_server(config, stop,
                                                   controller_manager=controller_manager,
                                                   scheduler=not args.disable_scheduler, agent=agent,
                                                   verbose=args.verbose))


def _engine_parsers(sub: argparse._SubParsersAction) -> None:
    """The Docker-style commands, listed in `pocketkube --help` (they parse with their own parsers)."""
    from pocketkube.cli.docker.parser import ENGINE_COMMANDS, REGISTRY_COMMANDS

    for name in ENGINE_COMMANDS:
        sub.add_parser(name, help=f"container engine: {name} (like docker {name})", add_help=False)
    sub.add_parser("build", help="build an image from a Dockerfile (like docker build)", add_help=False)
    for name in REGISTRY_COMMANDS:
        sub.add_parser(name, help="image registry server" if name == "registry" else
                       f"registry client: {name} (like docker {name})", add_help=False)


def _run_build_command(argv: list[str]) -> int:
    from pocketkube.cli.build import add_build_command, run_build_command

    parser = argparse.ArgumentParser(prog="pocketkube")
    add_build_command(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_build_command(parser.parse_args(argv))


def _run_registry_command(argv: list[str]) -> int:
    from pocketkube.cli.registry import add_registry_commands, run_registry_command

    parser = argparse.ArgumentParser(prog="pocketkube")
    add_registry_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_registry_command(parser.parse_args(argv))


def _run_engine_command(argv: list[str]) -> int:
    from pocketkube.cli.docker.commands import run_command
    from pocketkube.cli.docker.parser import build_parser

    args = build_parser().parse_args(argv)
    return run_command(args)


def _run_container_cleanup(argv: list[str]) -> int:
    """conmon's exit command (hidden): one process per container exit, so it imports only what it needs."""
    from pocketkube.engine.exitcleanup import run

    parser = argparse.ArgumentParser(prog="pocketkube container-cleanup")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("container")
    args = parser.parse_args(argv[1:])
    return run(args.data_dir, args.container)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the control-plane and node commands (not of those dispatched before it, in main)."""
    parser = argparse.ArgumentParser(prog="pocketkube", description="Kubernetes and its container engine, "
                                     "in Python")
    parser.add_argument("--version", action="version",
                        version=f"pocketkube {__version__} (Kubernetes {KUBERNETES_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _server_parser(sub)
    _controller_manager_parser(sub)
    _scheduler_parser(sub)
    _agent_parser(sub)
    _kubelet_parser(sub)
    sub.add_parser("kubectl", help="run kubectl against this machine's cluster (pocketkube kubectl ARGS...)")
    _engine_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["container-cleanup"]:
        return _run_container_cleanup(argv)
    # kubectl's own flags must pass through untouched, so it is dispatched before argparse sees them.
    if argv[:1] == ["kubectl"]:
        from pocketkube.cli.kubectl import run_kubectl

        data_dir = DEFAULT_DATA_DIR
        rest = argv[1:]
        if rest[:1] and rest[0].startswith("--data-dir="):
            data_dir, rest = Path(rest[0].split("=", 1)[1]), rest[1:]
        return run_kubectl(rest, data_dir=data_dir)

    from pocketkube.cli.docker.parser import ENGINE_COMMANDS, REGISTRY_COMMANDS

    # The engine's and the registry's commands parse with their own parsers, imported only when used so
    # that `pocketkube run` starts quickly.
    if argv[:1] and argv[0] in ENGINE_COMMANDS:
        return _run_engine_command(argv)
    if argv[:1] and argv[0] in REGISTRY_COMMANDS:
        return _run_registry_command(argv)
    if argv[:1] == ["build"]:
        return _run_build_command(argv)

    parser = build_parser()
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "server":
        return _run_server(args)
    if args.command == "controller-manager":
        return _run_controller_manager(args)
    if args.command == "scheduler":
        return _run_scheduler(args)
    if args.command == "agent":
        return _run_agent(args)
    if args.command == "kubelet":
        return _run_kubelet(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""What `pocketkube server` runs: the API server, plus the controller manager, the scheduler and the kubelet
of the server's own node.

The components run as child processes of the server, each with its own client certificate: Python
runs one thread of Python code at a time per process, so sharing the API server's process would put
the whole control plane on one core. The server supervises them (restarting one that dies) and they
die with it (PR_SET_PDEATHSIG), so `pocketkube server` still behaves as one unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from pocketkube.apiserver.componentstatus import HEALTHY, Health
from pocketkube.apiserver.pki import PKI, kubeconfig_path, write_kubeconfig
from pocketkube.apiserver.server import APIServer, ServerConfig
from pocketkube.client.rest import Client, ClientConfig
from pocketkube.controllers.base import ClusterSigning, ControllerSettings
from pocketkube.controllers.manager import ControllerManager

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
RESTART_DELAY_MAX = 30.0
STOP_GRACE = 10.0


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGTERM when the server process goes, even on kill -9."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ComponentProcess:
    """One supervised component: `pocketkube COMMAND --kubeconfig FILE`, restarted with back-off if it dies."""

    def __init__(self, command: str, kubeconfig: Path, verbose: bool = False, extra_args: list[str] = ()) -> None:
        self.command = command
        self.kubeconfig = kubeconfig
        self.verbose = verbose
        self.extra_args = list(extra_args)
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def supervise(self) -> None:
        delay = 1.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            args = [sys.executable, "-m", "pocketkube.cli.main", self.command, "--kubeconfig", str(self.kubeconfig),
                    *self.extra_args]
            if self.verbose:
                args.append("--verbose")
            self.process = await asyncio.create_subprocess_exec(*args, preexec_fn=_die_with_parent)
            started = loop.time()
            code = await self.process.wait()
            if self._stopping:
                return
            log.error("%s exited with %s; restarting in %.0f s", self.command, code, delay)
            await asyncio.sleep(delay)
            # A component that ran a while before dying starts again quickly; crash loops back off.
            delay = 1.0 if loop.time() - started > 60 else min(delay * 2, RESTART_DELAY_MAX)

    async def health(self) -> Health:
        """What `kubectl get cs` shows of the component: healthy while its process runs."""
        if self.process is None:
            return Health("False", error=f"{self.command} has not started yet")
        if self.process.returncode is not None:
            return Health("False", error=f"{self.command} exited with code {self.process.returncode}; restarting")
        return HEALTHY

    async def stop(self) -> None:
        self._stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            process.kill()
            await process.wait()


def component_kubeconfig(config: ServerConfig, pki: PKI, server_url: str, command: str, user: str) -> Path:
    """A kubeconfig for a component's own identity (CN=system:USER), next to the admin's."""
    path = config.data_dir / "tls" / f"{command}.kubeconfig"
    cert, key = pki.issue_client_cert(f"system:{user}", [])
    write_kubeconfig(path, server_url=server_url, pki=pki, user=user, client_cert=cert, client_key=key)
    return path


def node_kubeconfig(config: ServerConfig, pki: PKI, server_url: str, node_name: str) -> Path:
    """The server's own node's credentials: CN=system:node:NAME, O=system:nodes, as upstream's node authorizer
    expects of a kubelet."""
    path = config.data_dir / "tls" / "kubelet.kubeconfig"
    cert, key = pki.issue_client_cert(f"system:node:{node_name}", ["system:nodes"])
    write_kubeconfig(path, server_url=server_url, pki=pki, user=f"system:node:{node_name}", client_cert=cert,
                     client_key=key)
    return path


@dataclass
class ControllerManagerOptions:
    """The controller manager the server starts (`pocketkube controller-manager` flags)."""

    local_storage_path: Path  # where the local-path provisioner puts volumes' directories
    # The CA that signs approved CertificateSigningRequests; the server passes its own, as k3s does.
    signing_cert_file: Path | None = None
    signing_key_file: Path | None = None
    # kube-controller-manager's flags of the same names (seconds for the periods), with upstream's defaults.
    node_monitor_grace_period: float = 40.0
    node_startup_grace_period: float = 60.0
    terminated_pod_gc_threshold: int = 12500

    def args(self) -> list[str]:
        from pocketkube.cli.flags import go_duration

        args = ["--default-local-storage-path", str(self.local_storage_path),
                "--node-monitor-grace-period", go_duration(self.node_monitor_grace_period),
                "--node-startup-grace-period", go_duration(self.node_startup_grace_period),
                "--terminated-pod-gc-threshold", str(self.terminated_pod_gc_threshold)]
        if self.signing_cert_file is not None and self.signing_key_file is not None:
            args += ["--cluster-signing-cert-file", str(self.signing_cert_file),
                     "--cluster-signing-key-file", str(self.signing_key_file)]
        return args

    @property
    def signing(self) -> ClusterSigning | None:
        if self.signing_cert_file is None or self.signing_key_file is None:
            return None
        return ClusterSigning(self.signing_cert_file, self.signing_key_file)

    @property
    def settings(self) -> ControllerSettings:
        return ControllerSettings(node_monitor_grace_period=self.node_monitor_grace_period,
                                  node_startup_grace_period=self.node_startup_grace_period,
                                  terminated_pod_gc_threshold=self.terminated_pod_gc_threshold)


@dataclass
class AgentOptions:
    """The kubelet the server starts for its own node (`pocketkube kubelet` flags)."""

    node_name: str
    node_ip: str
    kubelet_port: int
    cni_bridge: str
    image_gc_thresholds: tuple[int, int] = (85, 80)   # high, low (percent of the disk)
    container_log: tuple[str, int] = ("10Mi", 5)       # rotation: max size of a file, files kept

    def args(self, config: ServerConfig) -> list[str]:
        high, low = self.image_gc_thresholds
        max_size, max_files = self.container_log
        return ["--data-dir", str(config.data_dir), "--node-name", self.node_name, "--node-ip", self.node_ip,
                "--port", str(self.kubelet_port), "--cni-bridge", self.cni_bridge,
                "--cluster-cidr", config.cluster_cidr, "--service-cidr", config.service_cidr, "--control-plane",
                "--image-gc-high-threshold", str(high), "--image-gc-low-threshold", str(low),
                "--container-log-max-size", max_size, "--container-log-max-files", str(max_files)]


async def run_server(config: ServerConfig, stop: asyncio.Event, *,
                     controller_manager: ControllerManagerOptions | None, scheduler: bool = True,
                     agent: AgentOptions | None = None, verbose: bool = False) -> None:
    """Run until `stop` is set; log one line once /readyz answers 200."""
    server = APIServer(config)
    components: list[ComponentProcess] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await server.start()
        log.info("pocketkube API server ready at %s (kubeconfig %s, datastore %s)", server.url,
                 kubeconfig_path(config.data_dir), config.endpoint.split("://")[0])
        if controller_manager is not None:
            controller_manager = replace(controller_manager, signing_cert_file=server.pki.ca_cert,
                                         signing_key_file=server.pki.ca_key)
        # each component with its extra flags, None for one not wanted
        wanted = [("controller-manager", "kube-controller-manager",
                   controller_manager.args() if controller_manager is not None else None),
                  ("scheduler", "kube-scheduler", [] if scheduler else None)]
        for command, user, args in wanted:
            if args is not None:
                kubeconfig = await asyncio.to_thread(component_kubeconfig, config, server.pki, server.url, command,
                                                     user)
                component = ComponentProcess(command, kubeconfig, verbose, args)
                components.append(component)
                tasks.append(asyncio.create_task(component.supervise(), name=command))
                server.component_statuses.checks[command] = component.health
        if agent is not None:
            kubeconfig = await asyncio.to_thread(node_kubeconfig, config, server.pki, server.url, agent.node_name)
            component = ComponentProcess("kubelet", kubeconfig, verbose, agent.args(config))
            components.append(component)
            tasks.append(asyncio.create_task(component.supervise(), name="kubelet"))
        await stop.wait()
    finally:
        await asyncio.gather(*(c.stop() for c in components), return_exceptions=True)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()


async def run_controller_manager(client_config: ClientConfig, options: ControllerManagerOptions,
                                 stop: asyncio.Event) -> None:
    async with Client(client_config, user_agent="pocketkube-controller-manager") as client:
        await ControllerManager(client, local_storage_path=options.local_storage_path,
                                signing=options.signing, settings=options.settings).run(stop)

"""One worker per pod, as upstream's pod workers: each sync brings the node in line with the pod's spec
(sandbox → network → volumes → init containers in order → sidecars → containers, restarts per
restartPolicy with CrashLoopBackOff), then reports the pod's status; deletion runs the graceful
termination (preStop, stop signal, grace period, SIGKILL), releases everything and removes the API object.

A worker sleeps until something happens: an update of its pod, the exit of one of its containers (a
watcher per running container), a probe result, or a timer (back-off ends, retries).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client
from pocketkube.engine.containers import Container, ContainerConfig
from pocketkube.engine.runtime.spec import Mount
from pocketkube.kubelet.backoff import Backoff
from pocketkube.kubelet.cgroups import PodCgroups, container_resources
from pocketkube.kubelet.env import EnvContext, EnvError, container_env
from pocketkube.kubelet.eventqueue import EventQueue
from pocketkube.kubelet.hooks import HookFailed, run_hook
from pocketkube.kubelet.podnetwork import PodNetwork, host_ports, pod_hostname
from pocketkube.kubelet.probes import ProbeTarget, ProbeWorker, engine_exec
from pocketkube.kubelet.runtime import (
    LABEL_CONTAINER_HASH,
    LABEL_CONTAINER_NAME,
    LABEL_RESTART_COUNT,
    LABEL_SANDBOX_ID,
    LABEL_TERMINATION_LOG,
    LABEL_TERMINATION_POLICY,
    ContainerCreateError,
    ImagePullError,
    Runtime,
    Sandbox,
    exit_code,
    pod_labels,
)
from pocketkube.kubelet.status import (
    KUBELET_CONDITIONS,
    ContainerView,
    InstanceState,
    PodObservation,
    format_pod,
    go_duration,
    parse_time,
    pod_status,
    status_changed,
)
from pocketkube.kubelet.volumes import ContainerMountsError, PodVolumes, VolumeError, VolumeManager

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_CATALOG = ResourceCatalog()
PODS = _CATALOG.resource("", "v1", "pods")
SECRETS = _CATALOG.resource("", "v1", "secrets")
CONFIGMAPS = _CATALOG.resource("", "v1", "configmaps")
assert PODS is not None and SECRETS is not None and CONFIGMAPS is not None

DEFAULT_GRACE = 30
MIN_KILL_GRACE = 2            # upstream's minimumGracePeriodInSeconds
RETRY_DELAY = 2.0             # after a failed sync step (volume, network, API)
RESYNC_PERIOD = 60.0          # a periodic look even when nothing happened (volume contents, image GC…)
TERMINATION_LOG = "/dev/termination-log"


@dataclass
class NodeContext:
    """What every pod worker of the node shares."""

    node_name: str
    node_ip: str
    client: Client
    runtime: Runtime
    network: PodNetwork
    cgroups: PodCgroups
    volumes: VolumeManager
    events: EventQueue
    pods_dir: Path
    restart_backoff: Backoff
    pull_backoff: Backoff
    list_services: Callable[[str], list[Obj]]
    node_allocatable: dict[str, str] = field(default_factory=dict)


def container_hash(container: Obj) -> str:
    """Changes when the container's definition changes (only the image is mutable on a pod)."""
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def default_pull_policy(image: str) -> str:
    name = image.split("@", 1)[0]
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    return "Always" if "@" not in image and tag in ("", "latest") else "IfNotPresent"


def pod_groups(pod: Obj) -> list[str]:
    """Groups every process of the pod joins besides its user's own (upstream's effective security context:
    fsGroup, then supplementalGroups)."""
    security = (pod.get("spec") or {}).get("securityContext") or {}
    groups = [security["fsGroup"]] if security.get("fsGroup") is not None else []
    return [str(group) for group in [*groups, *(security.get("supplementalGroups") or [])]]


def _is_sidecar(container: Obj) -> bool:
    return container.get("restartPolicy") == "Always"


def _should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: Obj, *, adopted: list[Container] = (),
                 sandboxes: list[Sandbox] = (), static: bool = False) -> None:
        self.ctx = ctx
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        # The API object the status goes to: the pod itself, or a static pod's mirror pod once there is one.
        self.api_uid: str | None = None if static else self.uid
        self.done = asyncio.Event()
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._removed = False                       # the API object is gone
        self._terminal = False                      # finished: nothing runs again
        self._instances: dict[str, Container] = {c.id: c for c in adopted}
        self._old_sandboxes = list(sandboxes[:-1])
        self.sandbox: Sandbox | None = sandboxes[-1] if sandboxes else None
        self._volumes: PodVolumes | None = None
        self._waiting: dict[str, tuple[str, str]] = {}   # container -> (reason, message) while it cannot run
        self._ready: dict[str, bool] = {}                # container instance id -> readiness
        self._started: dict[str, bool] = {}              # container instance id -> startup probe passed
        self._probes: dict[str, tuple[asyncio.Event, list[asyncio.Task[None]]]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_status: Obj | None = None
        self._start_time = time.time()
        self._pull_secrets: list[bytes] | None = None
        self._pull_failed_at: dict[str, float] = {}   # image -> when its last pull failed
        self._final_ips: list[str] = []               # the IPs a finished pod had, still reported

    # --- inputs --------------------------------------------------------------------------------------

    def mirrored(self, mirror_uid: str | None) -> None:
        """A static pod's mirror pod appeared (or went): its status is reported there from now on."""
        if mirror_uid != self.api_uid:
            self.api_uid = mirror_uid
            self._last_status = None
            self.wake()

    def update(self, pod: Obj) -> None:
        old = self.pod
        self.pod = pod
        meta, old_meta = pod["metadata"], old["metadata"]
        if pod.get("spec") != old.get("spec") or meta.get("deletionTimestamp") != old_meta.get("deletionTimestamp") \
                or meta.get("deletionGracePeriodSeconds") != old_meta.get("deletionGracePeriodSeconds") \
                or self._foreign_conditions(pod) != self._foreign_conditions(old):
            self.wake()

    @staticmethod
    def _foreign_conditions(pod: Obj) -> list[Obj]:
        return [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") not in KUBELET_CONDITIONS]

    def removed(self, pod: Obj) -> None:
        """The API object is gone (force deletion, or deleted while we were away): stop everything now."""
        self.pod = pod
        self._removed = True
        self.wake()

    def wake(self, delay: float = 0.0) -> None:
        if delay <= 0:
            self._wake.set()
            return
        due = time.monotonic() + delay
        if self._wake_at is None or due < self._wake_at:
            self._wake_at = due

    # --- the loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                timeout = RESYNC_PERIOD if self._wake_at is None else \
                    min(max(self._wake_at - time.monotonic(), 0.0), RESYNC_PERIOD)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                self._wake.clear()
                if self._wake_at is not None and self._wake_at <= time.monotonic():
                    self._wake_at = None
                try:
                    if await self._sync():
                        return
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    failures += 1
                    level = logging.WARNING if failures < 5 else logging.ERROR
                    log.log(level, "pod %s: sync failed: %s", format_pod(self.pod), err,
                            exc_info=not isinstance(err, APIError | OSError))
                    self.wake(min(RETRY_DELAY * failures, 30.0))
        finally:
            await self._stop_helpers()
            self.done.set()

    async def _stop_helpers(self) -> None:
        for stop, _ in self._probes.values():
            stop.set()
        tasks = [t for _, group in self._probes.values() for t in group] + list(self._watchers.values()) + \
            list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._probes.clear()
        self._watchers.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, reason: str, message: str) -> None:
        """Events the probers and hooks report (Unhealthy, ProbeWarning, LifecycleHTTPFallback)."""
        self._event("Normal" if reason == "ProbeWarning" else "Warning", reason, message)

    def _event(self, event_type: str, reason: str, message: str) -> None:
        self.ctx.events.record({"kind": "Pod", "apiVersion": "v1", **self.pod}, event_type, reason, message)

    # --- sync ----------------------------------------------------------------------------------------

    async def _sync(self) -> bool:
        """One pass; True when the worker is finished (the pod is gone from the node and the API)."""
        meta = self.pod["metadata"]
        await self._refresh_instances()
        if self._removed or meta.get("deletionTimestamp"):
            await self._terminate()
            return True
        if self._terminal:
            await self._report()
            return False
        phase = (self.pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and not self._instances:
            self._terminal = True  # finished before we (re)started: never run it again
            return False
        if not await self._prepare():
            await self._report()
            return False
        await self._converge()
        await self._report()
        return False

    async def _refresh_instances(self) -> None:
        for cid in list(self._instances):
            container = await self.ctx.runtime.inspect(cid)
            if container is None:
                del self._instances[cid]
            else:
                self._instances[cid] = container
                if container.running:
                    self._watch(container)

    def _instances_of(self, name: str) -> list[Container]:
        """Instances of one container of the spec, newest first."""
        found = [c for c in self._instances.values() if c.config.labels.get(LABEL_CONTAINER_NAME) == name]
        found.sort(key=lambda c: (int(c.config.labels.get(LABEL_RESTART_COUNT, 0)), c.created), reverse=True)
        return found

    # --- sandbox, network, cgroup, volumes -----------------------------------------------------------

    async def _sandbox_usable(self) -> bool:
        sandbox = self.sandbox
        return sandbox is not None and sandbox.network_ready and await self.ctx.runtime.sandbox_alive(sandbox)

    async def _prepare(self) -> bool:
        """Sandbox with network, pod cgroup and volumes; False (with the reason recorded) when not ready."""
        ctx = self.ctx
        pod = self.pod
        ctx.cgroups.ensure_pod(pod)  # cgroupfs only, ~1 ms once: cheaper here than a worker thread's round trip
        if not await self._sandbox_usable():
            if self.sandbox is not None:
                # A lost sandbox (node reboot, failed setup): every container restarts in a new one.
                for container in self._instances.values():
                    if container.running:
                        await ctx.runtime.stop_container(container.id, 0)
                self._old_sandboxes.append(self.sandbox)
                self._event("Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
            attempt = self.sandbox.attempt + 1 if self.sandbox is not None else 0
            hostname, _ = pod_hostname(pod, ctx.network.dns.cluster_domain)
            try:
                self.sandbox = sandbox = await ctx.runtime.run_sandbox(pod, attempt, hostname, ctx.cgroups.path(pod))
            except ContainerCreateError as err:
                self._event("Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {err}")
                self.sandbox = None
                self.wake(RETRY_DELAY)
                return False
            try:
                if sandbox.host_network:
                    sandbox.ips = [ctx.node_ip]
                else:
                    assert sandbox.netns is not None
                    sandbox.host_ports = bool(host_ports(pod))
                    sandbox.ips = await ctx.network.attach(sandbox.id, sandbox.netns, pod)
                sandbox.network_ready = True
                await asyncio.to_thread(self._record_sandbox, sandbox, pod)
            except Exception as err:
                self._event("Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {err}")
                await self._remove_sandbox(sandbox)
                self.sandbox = None
                self.wake(RETRY_DELAY)
                return False
        for old in self._old_sandboxes:
            await self._remove_sandbox(old)
        self._old_sandboxes.clear()
        try:
            if self._volumes is None:
                self._volumes = await ctx.volumes.setup(pod)
            else:
                await ctx.volumes.refresh(pod, self._volumes)
        except VolumeError as err:
            self._event("Warning", "FailedMount", str(err))
            self.wake(RETRY_DELAY)
            return False
        return True

    def _record_sandbox(self, sandbox: Sandbox, pod: Obj) -> None:
        """The ready sandbox's record, and the pod's /etc files: written once per sandbox, as upstream (what a
        container changes in them stays)."""
        self.ctx.runtime.save_sandbox(sandbox)
        self.ctx.network.write_files(self._pod_dir(), pod, sandbox.ips)

    async def _remove_sandbox(self, sandbox: Sandbox) -> None:
        if not sandbox.host_network:
            with contextlib.suppress(RuntimeError):  # no network configured: nothing was attached
                await self.ctx.network.detach(sandbox.id, sandbox.netns, host_ports=sandbox.host_ports)
        await self.ctx.runtime.remove_sandbox(sandbox)

    def _pod_dir(self) -> Path:
        return self.ctx.pods_dir / self.uid

    # --- containers ----------------------------------------------------------------------------------

    async def _converge(self) -> None:
        """Start what must run now, in upstream's order; decide when the pod is finished."""
        spec = self.pod["spec"]
        policy = spec.get("restartPolicy") or "Always"
        for container in spec.get("initContainers") or []:
            latest = next(iter(self._instances_of(container["name"])), None)
            if _is_sidecar(container):
                if latest is None or not latest.running:
                    if not await self._start_or_back_off(container, latest, "Always"):
                        return
                if not self._started.get(self._running_id(container["name"]) or "", False):
                    return  # the next init container waits for the sidecar's startup
                continue
            if latest is not None and latest.running:
                return
            if latest is not None and latest.state.status == "exited" and exit_code(latest) == 0:
                continue
            if latest is not None and policy == "Never":
                await self._finish()  # a failed init container with restartPolicy Never fails the pod
                return
            await self._start_or_back_off(container, latest, "OnFailure")
            return
        running_any = False
        for container in spec.get("containers") or []:
            instances = self._instances_of(container["name"])
            latest = instances[0] if instances else None
            if latest is not None and latest.running:
                if latest.config.labels.get(LABEL_CONTAINER_HASH) != container_hash(container):
                    self._event("Normal", "Killing", f"Container {container['name']} definition changed, will be "
                                                     "restarted")
                    await self._stop(latest, self._grace(), container)
                else:
                    running_any = True
                    continue
            if latest is None or _should_restart(policy, exit_code(latest)):
                running_any = await self._start_or_back_off(container, latest, policy) or running_any
        if policy != "Always" and not running_any and self._all_done(spec, policy):
            await self._finish()
            return
        for container in spec.get("ephemeralContainers") or []:
            # Started once, once the pod runs (a debugger comes after the app); never restarted.
            if not self._instances_of(container["name"]):
                await self._start(container, None)

    def _all_done(self, spec: Obj, policy: str) -> bool:
        for container in spec.get("containers") or []:
            latest = next(iter(self._instances_of(container["name"])), None)
            if latest is None or latest.running:
                return False
            if _should_restart(policy, exit_code(latest)):
                return False
        return True

    async def _finish(self) -> None:
        """The pod is terminal: stop what still runs (sidecars), release the network, keep the dead containers
        for their logs until the pod is deleted."""
        self._terminal = True
        self._waiting.clear()  # nothing waits to start any more: the last states speak
        for container in self._instances.values():
            if container.running:
                await self._stop(container, self._grace(), None)
        if self.sandbox is not None:
            self._final_ips = list(self.sandbox.ips)
            await self._remove_sandbox(self.sandbox)
            self.sandbox = None
        await self._refresh_instances()

    def _running_id(self, name: str) -> str | None:
        latest = next(iter(self._instances_of(name)), None)
        return latest.id if latest is not None and latest.running else None

    async def _start_or_back_off(self, container: Obj, latest: Container | None, policy: str) -> bool:
        """Start a (new instance of the) container unless it is in CrashLoopBackOff; True when started."""
        name = container["name"]
        now = time.time()
        if latest is not None:
            if not _should_restart(policy, exit_code(latest)):
                return False
            key = (self.uid, name)
            finished = latest.state.finished_at or now
            backoff = self.ctx.restart_backoff
            backoff.reset_if_stable(key, latest.state.started_at or finished, finished)
            if backoff.in_backoff(key, now, since=finished):
                delay = backoff.delay(key)
                self._waiting[name] = ("CrashLoopBackOff", f"back-off {go_duration(delay)} restarting failed "
                                                           f"container={name} pod={format_pod(self.pod)}")
                self._event("Warning", "BackOff", f"Back-off restarting failed container {name} in pod "
                                                  f"{format_pod(self.pod)}")
                self.wake(max(finished + delay - now, 0.05))
                return False
            backoff.next_delay(key, now)
        return await self._start(container, latest)

    async def _start(self, container: Obj, latest: Container | None) -> bool:
        name = container["name"]
        image = await self._ensure_image(container)
        if image is None:
            return False
        try:
            config = await self._container_config(container, image, latest)
        except (EnvError, ContainerMountsError, ValueError) as err:
            self._waiting[name] = ("CreateContainerConfigError", str(err))
            self._event("Warning", "Failed", f"Error: {err}")
            self.wake(RETRY_DELAY * 5)
            return False
        try:
            created = await self.ctx.runtime.create_container(config)
            self._instances[created.id] = created
            self._collect_old_instances(name, keep=created.id)
            self._event("Normal", "Created", f"Created container: {name}")
            started = await self.ctx.runtime.start_container(created.id)
        except ContainerCreateError as err:
            self._waiting[name] = (err.reason, str(err))
            self._event("Warning", "Failed", f"Error: {err}")
            self.wake(RETRY_DELAY)
            return False
        self._waiting.pop(name, None)
        self._instances[created.id] = started
        self._watch(started)
        self._event("Normal", "Started", f"Started container {name}")
        if started.running:
            self._start_probes(container, started)
            post_start = (container.get("lifecycle") or {}).get("postStart")
            if post_start:
                try:
                    await run_hook(post_start, self._probe_target(started), timeout=float(self._grace()),
                                   hook="postStart", ports=container.get("ports") or [], on_event=self._on_event)
                except HookFailed as err:
                    self._event("Warning", err.event_reason, err.event_message)
                    await self._stop(started, self._grace(), container, hook=False)
                    self._waiting[name] = (HookFailed.POST_START_REASON, err.detail)
                    return False
        return True

    def _collect_old_instances(self, name: str, keep: str) -> None:
        """Upstream keeps one dead instance per container (for --previous logs); older ones go."""
        instances = [c for c in self._instances_of(name) if c.id != keep]
        for old in instances[1:]:
            del self._instances[old.id]
            self._spawn(self.ctx.runtime.remove_container(old))

    async def _ensure_image(self, container: Obj) -> str | None:
        """The image reference once present (per imagePullPolicy), else None with the waiting reason set."""
        name = container["name"]
        image = container.get("image") or ""
        policy = container.get("imagePullPolicy") or default_pull_policy(image)
        runtime = self.ctx.runtime
        present = runtime.image_present(image)
        if policy == "Never" and present is None:
            message = f'Container image "{image}" is not present with pull policy of Never'
            self._waiting[name] = ("ErrImageNeverPull", message)
            self._event("Warning", "ErrImageNeverPull", message)
            return None
        if present is not None and policy != "Always":
            self._event("Normal", "Pulled", f'Container image "{image}" already present on machine and can be '
                                            "accessed by the pod")
            return image
        key = (self.uid, image)
        backoff = self.ctx.pull_backoff
        now = time.time()
        backoff.reset_if_stable(key, None, now)
        if backoff.in_backoff(key, now):
            self._waiting[name] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            self._event("Normal", "BackOff", f'Back-off pulling image "{image}"')
            failed_at = self._pull_failed_at.get(image, now)
            self.wake(max(failed_at + backoff.delay(key) - now, 0.05))
            return None
        self._event("Normal", "Pulling", f'Pulling image "{image}"')
        started = time.monotonic()
        try:
            pulled = await runtime.pull_image(image, await self._image_pull_secrets())
        except ImagePullError as err:
            self._pull_failed_at[image] = time.time()
            backoff.next_delay(key, self._pull_failed_at[image])
            self._waiting[name] = (err.reason, str(err))
            self._event("Warning", "Failed", f'Failed to pull image "{image}": {err}')
            self.wake(1.0)  # the next look reports ImagePullBackOff until the window ends
            return None
        elapsed = time.monotonic() - started
        self._event("Normal", "Pulled", f'Successfully pulled image "{image}" in {elapsed:.3f}s '
                                        f"({elapsed:.3f}s including waiting). Image size: {pulled.size} bytes.")
        return image

    async def _image_pull_secrets(self) -> list[bytes]:
        if self._pull_secrets is None:
            documents = []
            namespace = self.pod["metadata"].get("namespace", "")
            for ref in self.pod["spec"].get("imagePullSecrets") or []:
                try:
                    secret = await self.ctx.client.get(SECRETS, ref.get("name", ""), namespace)
                except APIError as err:
                    if err.not_found:
                        continue  # upstream warns and pulls without it
                    raise
                data = secret.get("data") or {}
                for key in (".dockerconfigjson", ".dockercfg"):
                    if key in data:
                        documents.append(base64.b64decode(data[key]))
            self._pull_secrets = documents
        return self._pull_secrets

    # --- container configuration ---------------------------------------------------------------------

    async def _container_config(self, container: Obj, image: str, latest: Container | None) -> ContainerConfig:
        ctx = self.ctx
        pod = self.pod
        spec = pod["spec"]
        sandbox = self.sandbox
        assert sandbox is not None
        restart_count = int(latest.config.labels.get(LABEL_RESTART_COUNT, 0)) + 1 if latest is not None else 0
        env = await container_env(pod, container, self._env_context())
        security = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        user = self._user(security, container, image)
        capabilities = (container.get("securityContext") or {}).get("capabilities") or {}
        name = container["name"]
        log_path = ctx.runtime.container_log_path(pod, name, restart_count)
        termination_file, mounts = await asyncio.to_thread(self._prepare_files, container, restart_count, log_path,
                                                           env)
        labels = {**pod_labels(pod), LABEL_CONTAINER_NAME: name, LABEL_RESTART_COUNT: str(restart_count),
                  LABEL_SANDBOX_ID: sandbox.id, LABEL_CONTAINER_HASH: container_hash(container),
                  LABEL_TERMINATION_LOG: str(termination_file),
                  LABEL_TERMINATION_POLICY: container.get("terminationMessagePolicy") or "File"}
        privileged = bool(security.get("privileged"))
        return ContainerConfig(
            image=image, name=self._engine_name(name, restart_count), entrypoint=container.get("command") or None,
            command=container.get("args") or None, env=env, working_dir=container.get("workingDir") or "",
            # the image's /etc/group memberships join too, unless supplementalGroupsPolicy is Strict
            user=user, group_add=pod_groups(pod) + [str(gid) for gid in self._volume_groups()],
            image_groups=(spec.get("securityContext") or {}).get("supplementalGroupsPolicy") != "Strict",
            labels=labels, tty=bool(container.get("tty")), stdin=bool(container.get("stdin")), mounts=mounts,
            readonly_rootfs=bool(security.get("readOnlyRootFilesystem")), privileged=privileged,
            cap_add=list(capabilities.get("add") or []), cap_drop=list(capabilities.get("drop") or []),
            no_new_privileges=security.get("allowPrivilegeEscalation") is False and not privileged,
            resources=container_resources(container), network="sandbox",
            sandbox_namespaces={**ctx.runtime.container_namespaces(sandbox), **self._target_namespaces(container)},
            stop_timeout=self._grace(), cgroup_parent=ctx.cgroups.path(pod), log_path=str(log_path),
            manage_etc_files=False, cleanup_on_exit=False)

    def _volume_groups(self) -> list[int]:
        return self._volumes.extra_groups() if self._volumes is not None else []

    def _target_namespaces(self, container: Obj) -> dict[str, str]:
        """An ephemeral container's targetContainerName: it joins that container's process namespace, so a
        debugger sees (and can trace) the target's processes."""
        target = container.get("targetContainerName")
        if not target:
            return {}
        running = next((c for c in self._instances_of(target) if c.running and c.state.pid), None)
        if running is None:
            raise EnvError(f"the target container {target} is not running")
        return {"pid": f"/proc/{running.state.pid}/ns/pid"}

    def _engine_name(self, name: str, restart_count: int) -> str:
        meta = self.pod["metadata"]
        return f"k8s_{name}_{meta['name']}_{meta.get('namespace', '')}_{self.uid}_{restart_count}"

    def _prepare_files(self, container: Obj, restart_count: int, log_path: Path, env: list[str]
                       ) -> tuple[Path, list[Mount]]:
        """The container's log directory and termination message file, and its mounts (in a worker thread:
        file creations can take milliseconds)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        directory = self._pod_dir() / "containers" / container["name"]
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{restart_count}"
        path.write_bytes(b"")
        os.chmod(path, 0o666)
        return path, self._mounts(container, path, env)

    def _user(self, security: Obj, container: Obj, image: str) -> str:
        """The user to run as; runAsNonRoot checked as upstream's verifyRunAsNonRoot."""
        uid, gid = security.get("runAsUser"), security.get("runAsGroup")
        image_user = ""
        if uid is None:
            found = self.ctx.runtime.image_present(image)
            image_user = ((found.config.get("config") or {}).get("User") or "").partition(":")[0] if found else ""
        if security.get("runAsNonRoot"):
            pod_name = f'(pod: "{format_pod(self.pod)}", container: {container["name"]})'
            if uid is not None:
                if int(uid) == 0:
                    raise EnvError(f"container's runAsUser breaks non-root policy {pod_name}")
            else:
                if not image_user.isdigit() and image_user:
                    raise EnvError(f"container has runAsNonRoot and image has non-numeric user ({image_user}), "
                                   f"cannot verify user is non-root {pod_name}")
                if not image_user or int(image_user) == 0:
                    raise EnvError(f"container has runAsNonRoot and image will run as root {pod_name}")
        if uid is None:
            # "": the engine takes the image's user; a runAsGroup alone replaces only the image user's group
            return "" if gid is None else f"{image_user or 0}:{gid}"
        return f"{uid}:{gid}" if gid is not None else str(uid)

    def _mounts(self, container: Obj, termination_file: Path, env: list[str]) -> list[Mount]:
        targets = {m.get("mountPath") for m in container.get("volumeMounts") or []}
        mounts: list[Mount] = []
        etc = {"/etc/hosts": self._pod_dir() / "etc-hosts", "/etc/resolv.conf": self._pod_dir() / "resolv.conf",
               "/etc/hostname": self._pod_dir() / "hostname"}
        for target, source in etc.items():
            if target not in targets:
                mounts.append(Mount(destination=target, source=str(source), options=["rbind", "rw"]))
        path = container.get("terminationMessagePath") or TERMINATION_LOG
        if path not in targets:
            mounts.append(Mount(destination=path, source=str(termination_file), options=["rbind", "rw"]))
        if self._volumes is not None:
            resolved = dict(entry.split("=", 1) for entry in env)
            mounts += self.ctx.volumes.mounts_for(self.pod, container, self._volumes, env=resolved)
        return mounts

    def _env_context(self) -> EnvContext:
        ctx = self.ctx

        async def get(info: Any, namespace: str, name: str) -> Obj | None:
            try:
                return await ctx.client.get(info, name, namespace)
            except APIError as err:
                if err.not_found:
                    return None
                raise

        async def configmap(namespace: str, name: str) -> Obj | None:
            return await get(CONFIGMAPS, namespace, name)

        async def secret(namespace: str, name: str) -> Obj | None:
            return await get(SECRETS, namespace, name)

        async def services(namespace: str) -> list[Obj]:
            return ctx.list_services(namespace)

        return EnvContext(node_name=ctx.node_name, host_ips=[ctx.node_ip],
                          pod_ips=list(self.sandbox.ips) if self.sandbox else [],
                          node_allocatable=ctx.node_allocatable, get_configmap=configmap, get_secret=secret,
                          list_services=services)

    # --- probes and exits ----------------------------------------------------------------------------

    def _watch(self, container: Container) -> None:
        if container.id in self._watchers:
            return

        async def wait() -> None:
            await self.ctx.runtime.wait_exit(container.id)
            self._watchers.pop(container.id, None)
            self._stop_probes(container.id)
            self.wake()

        self._watchers[container.id] = asyncio.create_task(wait(), name=f"exit-{container.id[:12]}")

    def _probe_target(self, container: Container) -> ProbeTarget:
        sandbox = self.sandbox
        return ProbeTarget(pod_ip=sandbox.ips[0] if sandbox and sandbox.ips else "",
                           netns=sandbox.netns if sandbox else None,
                           exec=engine_exec(self.ctx.runtime, container.id),  # type: ignore[arg-type]
                           container=container.config.labels.get(LABEL_CONTAINER_NAME, ""), pod=format_pod(self.pod))

    def _start_probes(self, container: Obj, instance: Container) -> None:
        """A worker per probe of the new instance; readiness starts False, startup gates the other two."""
        cid = instance.id
        self._ready[cid] = "readinessProbe" not in container
        self._started[cid] = "startupProbe" not in container
        stop = asyncio.Event()
        target = self._probe_target(instance)
        ports = container.get("ports") or []
        workers: dict[str, ProbeWorker] = {}

        def on_result(kind: str, ok: bool, message: str, grace: int | None) -> None:
            self._probe_result(container, cid, kind, ok, grace, workers)

        for kind in ("startup", "liveness", "readiness"):
            probe = container.get(f"{kind}Probe")
            if probe:
                workers[kind] = ProbeWorker(kind, probe, target, ports, on_result, on_event=self._on_event)
        if "startup" not in workers:
            for worker in workers.values():
                worker.started()
        tasks = [asyncio.create_task(w.run(stop), name=f"probe-{kind}-{cid[:12]}") for kind, w in workers.items()]
        self._probes[cid] = (stop, tasks)

    def _probe_result(self, container: Obj, cid: str, kind: str, ok: bool, grace: int | None,
                      workers: dict[str, ProbeWorker]) -> None:
        name = container["name"]
        if kind == "readiness":
            self._ready[cid] = ok
        elif kind == "startup":
            self._started[cid] = ok
            if ok:
                for other in ("liveness", "readiness"):
                    if other in workers:
                        workers[other].started()
        if kind in ("liveness", "startup") and not ok:
            instance = self._instances.get(cid)
            if instance is not None and instance.running:
                self._event("Normal", "Killing", f"Container {name} failed {kind} probe, will be restarted")
                self._spawn(self._stop(instance, int(grace if grace is not None else self._grace()), container))
        self.wake()

    def _stop_probes(self, cid: str) -> None:
        stop, tasks = self._probes.pop(cid, (None, []))
        if stop is not None:
            stop.set()
        for task in tasks:
            task.cancel()

    # --- stopping ------------------------------------------------------------------------------------

    def _grace(self) -> int:
        spec_grace = self.pod["spec"].get("terminationGracePeriodSeconds")
        return int(spec_grace) if spec_grace is not None else DEFAULT_GRACE

    async def _stop(self, instance: Container, grace: int, container: Obj | None, *, hook: bool = True) -> None:
        """preStop (within the grace period), then the stop signal, then SIGKILL when the grace period ends."""
        started = time.monotonic()
        pre_stop = ((container or {}).get("lifecycle") or {}).get("preStop")
        if hook and pre_stop and grace > 0 and instance.running:
            try:
                await run_hook(pre_stop, self._probe_target(instance), timeout=float(grace), hook="preStop",
                               ports=(container or {}).get("ports") or [], on_event=self._on_event)
            except HookFailed as err:
                if not err.timed_out:  # a hook still running when the grace period ends is simply cut short
                    self._event("Warning", err.event_reason, err.event_message)
        remaining = max(grace - int(time.monotonic() - started), MIN_KILL_GRACE)
        self._stop_probes(instance.id)
        await self.ctx.runtime.stop_container(instance.id, remaining)
        refreshed = await self.ctx.runtime.inspect(instance.id)
        if refreshed is not None:
            self._instances[instance.id] = refreshed

    async def _kill_all(self, grace: int) -> None:
        """App containers first (in parallel), then sidecars in reverse order, as upstream."""
        spec = self.pod.get("spec") or {}
        by_name = {c["name"]: c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}
        sidecars = [c["name"] for c in spec.get("initContainers") or [] if _is_sidecar(c)]
        running = [c for c in self._instances.values() if c.running]
        first = [c for c in running if c.config.labels.get(LABEL_CONTAINER_NAME) not in sidecars]
        for instance in first:
            self._event("Normal", "Killing", f"Stopping container {instance.config.labels.get(LABEL_CONTAINER_NAME)}")
        await asyncio.gather(*(self._stop(c, grace, by_name.get(c.config.labels.get(LABEL_CONTAINER_NAME, "")))
                               for c in first))
        for name in reversed(sidecars):
            for instance in [c for c in running if c.config.labels.get(LABEL_CONTAINER_NAME) == name]:
                self._event("Normal", "Killing", f"Stopping container {name}")
                await self._stop(instance, grace, by_name.get(name))

    async def _terminate(self) -> None:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        grace = int(grace) if grace is not None else self._grace()
        await self._kill_all(grace)
        final = self._desired(terminal=True)  # the stopped containers, before cleanup forgets them
        await self.cleanup()
        if not self._removed:
            await self._send(final)
        if not self._removed and self.api_uid:
            try:
                await self.ctx.client.delete(PODS, meta["name"], meta.get("namespace", ""), grace_period_seconds=0,
                                             preconditions={"uid": self.api_uid})
            except APIError as err:
                if not (err.not_found or err.status == 409):
                    raise

    async def cleanup(self) -> None:
        """Everything of the pod on the node goes: containers, sandboxes, network, volumes, cgroup, files."""
        await self._stop_helpers()
        for container in list(self._instances.values()):
            await self.ctx.runtime.remove_container(container)
        self._instances.clear()
        for sandbox in [*self._old_sandboxes, *([self.sandbox] if self.sandbox else [])]:
            await self._remove_sandbox(sandbox)
        self._old_sandboxes.clear()
        self.sandbox = None
        await self.ctx.volumes.teardown(self.uid)
        await asyncio.to_thread(self.ctx.cgroups.remove_pod, self.uid)
        meta = self.pod["metadata"]
        await asyncio.to_thread(_remove_dirs, [self._pod_dir(), self.ctx.runtime.pod_log_dir(
            meta.get("namespace", ""), meta["name"], self.uid)])

    # --- status --------------------------------------------------------------------------------------

    def _view(self, container: Obj) -> ContainerView:
        name = container["name"]
        instances = self._instances_of(name)
        latest = instances[0] if instances else None
        view = ContainerView(name=name, image=container.get("image", ""))
        if latest is not None:
            view.latest = self._instance_state(latest)
            view.previous = self._instance_state(instances[1]) if len(instances) > 1 else None
            view.ready = latest.running and self._ready.get(latest.id, "readinessProbe" not in container)
            view.started = latest.running and self._started.get(latest.id, "startupProbe" not in container)
        waiting = self._waiting.get(name)
        if waiting and not (latest is not None and latest.running):
            view.waiting_reason, view.waiting_message = waiting
        return view

    def _instance_state(self, container: Container) -> InstanceState:
        return self.ctx.runtime.instance_state(container)

    def _desired(self, *, terminal: bool = False) -> Obj:
        pod = self.pod
        spec = pod.get("spec") or {}
        sandbox = self.sandbox
        seen = PodObservation(
            init_views=[self._view(c) for c in spec.get("initContainers") or []],
            views=[self._view(c) for c in spec.get("containers") or []],
            ephemeral_views=[self._view(c) for c in spec.get("ephemeralContainers") or []],
            sandbox_ready=sandbox is not None and sandbox.network_ready and not self._terminal and not terminal,
            host_ip=self.ctx.node_ip, pod_ips=list(sandbox.ips) if sandbox else (self._final_ips or self._known_ips()),
            start_time=self._start_time_of(pod), terminal=self._terminal or terminal)
        return pod_status(pod, seen, time.time())

    async def _report(self) -> None:
        await self._send(self._desired())

    async def _send(self, desired: Obj) -> None:
        """Patch the pod's status when it differs from what the API (or our last report) holds."""
        pod = self.pod
        if self.api_uid is None:
            return  # a static pod whose mirror pod does not exist yet
        if self._last_status == desired or not status_changed(pod, desired):
            self._last_status = desired
            return
        meta = pod["metadata"]
        try:
            updated = await self.ctx.client.patch(PODS, meta["name"], {"metadata": {"uid": self.api_uid},
                                                                       "status": desired},
                                                  meta.get("namespace", ""), subresource="status")
        except APIError as err:
            if err.not_found:
                return  # the pod is gone: its worker hears of it from the informer
            raise
        self._last_status = desired
        self.pod = {**self.pod, "status": updated.get("status", desired)}

    def _known_ips(self) -> list[str]:
        return [entry["ip"] for entry in (self.pod.get("status") or {}).get("podIPs") or []]

    def _start_time_of(self, pod: Obj) -> float:
        return parse_time((pod.get("status") or {}).get("startTime")) or self._start_time

    # --- for the streaming server --------------------------------------------------------------------

    def container_instances(self, name: str) -> list[Container]:
        return self._instances_of(name)


def _remove_dirs(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)

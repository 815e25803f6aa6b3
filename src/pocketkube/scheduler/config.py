"""KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1), the subset pocketkube honours:
profiles (schedulerName, plugins enabled/disabled per extension point and multiPoint, score weights,
pluginConfig args, percentageOfNodesToScore), the global percentageOfNodesToScore, pod back-off and
leader election. Defaulting and plugin-set merging follow upstream (default_plugins.go, framework.go).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pocketkube.api.cron import parse_go_duration
from pocketkube.client.leaderelection import ElectionTiming
from pocketkube.scheduler.framework import EXTENSION_METHODS, EXTENSION_POINTS, Plugin

DEFAULT_SCHEDULER_NAME = "default-scheduler"
API_VERSION = "kubescheduler.config.k8s.io/v1"

# getDefaultPlugins(): (name, weight) in upstream order; weight 0 = not a score plugin / default.
DEFAULT_MULTI_POINT: tuple[tuple[str, int], ...] = (
    ("SchedulingGates", 0), ("PrioritySort", 0), ("NodeUnschedulable", 0), ("NodeName", 0),
    ("TaintToleration", 3), ("NodeAffinity", 2), ("NodePorts", 0), ("NodeResourcesFit", 1),
    ("VolumeRestrictions", 0), ("VolumeBinding", 0), ("PodTopologySpread", 2), ("InterPodAffinity", 2),
    ("DefaultPreemption", 0), ("NodeResourcesBalancedAllocation", 1), ("ImageLocality", 1), ("DefaultBinder", 0),
)
ALL_POINTS = ("multiPoint", *EXTENSION_POINTS)


@dataclass
class PluginSet:
    enabled: list[tuple[str, int]] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> PluginSet:
        raw = raw or {}
        return cls([(p["name"], int(p.get("weight") or 0)) for p in raw.get("enabled") or []],
                   [p["name"] for p in raw.get("disabled") or []])


@dataclass
class Profile:
    """A resolved profile: for each extension point, the ordered (plugin, weight) list."""

    scheduler_name: str
    plugins: dict[str, list[tuple[str, int]]]
    plugin_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    percentage_of_nodes_to_score: int | None = None


@dataclass
class SchedulerConfiguration:
    profiles: list[Profile]
    percentage_of_nodes_to_score: int | None = None
    pod_initial_backoff_seconds: float = 1.0
    pod_max_backoff_seconds: float = 10.0
    leader_elect: bool = True
    lease_name: str = "kube-scheduler"
    lease_namespace: str = "kube-system"
    lease_duration: float = 15.0  # leaderElection.leaseDuration, renewDeadline, retryPeriod (seconds)
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def merge_plugin_set(default: PluginSet, custom: PluginSet) -> PluginSet:
    """mergePluginSet: custom disabled (or '*') removes defaults, custom enabled replaces in place or appends."""
    disabled = set(custom.disabled) | set(default.disabled)
    custom_index = {name: i for i, (name, _) in enumerate(custom.enabled)}
    replaced: set[int] = set()
    enabled: list[tuple[str, int]] = []
    if "*" not in disabled:
        for name, weight in default.enabled:
            if name in disabled:
                continue
            if name in custom_index:
                replaced.add(custom_index[name])
                enabled.append(custom.enabled[custom_index[name]])
            else:
                enabled.append((name, weight))
    enabled += [p for i, p in enumerate(custom.enabled) if i not in replaced]
    return PluginSet(enabled, custom.disabled + default.disabled)


def expand_profile(scheduler_name: str, sets: Mapping[str, PluginSet], registry: Mapping[str, type[Plugin]],
                   plugin_args: dict[str, dict[str, Any]] | None = None,
                   percentage: int | None = None) -> Profile:
    """expandMultiPointPlugins: multiPoint plugins join every point they implement, unless disabled there
    or configured explicitly (explicit first, then multiPoint, then the other explicit plugins)."""
    multi = sets.get("multiPoint", PluginSet())
    resolved: dict[str, list[tuple[str, int]]] = {}
    for point in EXTENSION_POINTS:
        own = sets.get(point, PluginSet())
        explicit = {name: weight for name, weight in own.enabled}
        if "*" in own.disabled:
            resolved[point] = list(own.enabled)
            continue
        overrides: list[str] = []
        from_multi: list[tuple[str, int]] = []
        for name, weight in multi.enabled:
            cls = registry.get(name)
            if cls is None:
                raise ValueError(f"{point} plugin {name!r} does not exist")
            if not hasattr(cls, EXTENSION_METHODS[point]) or name in own.disabled:
                continue
            if name in explicit:
                overrides.append(name)
                continue
            if any(n == name for n, _ in from_multi):
                raise ValueError(f"plugin {name!r} already registered as {point!r}")
            from_multi.append((name, weight))
        ordered = [(n, explicit[n]) for n in overrides] + from_multi + \
            [(n, w) for n, w in own.enabled if n not in overrides]
        resolved[point] = ordered
    return Profile(scheduler_name, resolved, dict(plugin_args or {}), percentage)


def default_profile(registry: Mapping[str, type[Plugin]], scheduler_name: str = DEFAULT_SCHEDULER_NAME) -> Profile:
    return expand_profile(scheduler_name, {"multiPoint": PluginSet(list(DEFAULT_MULTI_POINT))}, registry)


def parse_configuration(raw: Mapping[str, Any] | None, registry: Mapping[str, type[Plugin]]) -> SchedulerConfiguration:
    raw = raw or {}
    if raw.get("apiVersion", API_VERSION) != API_VERSION or raw.get("kind", "KubeSchedulerConfiguration") != \
            "KubeSchedulerConfiguration":
        raise ValueError(f"unsupported configuration {raw.get('apiVersion')}/{raw.get('kind')}: want "
                         f"{API_VERSION} KubeSchedulerConfiguration")
    profiles_raw = raw.get("profiles") or [{"schedulerName": DEFAULT_SCHEDULER_NAME}]
    profiles: list[Profile] = []
    names: set[str] = set()
    queue_sorts: set[tuple[str, ...]] = set()
    for p in profiles_raw:
        name = p.get("schedulerName") or DEFAULT_SCHEDULER_NAME
        if name in names:
            raise ValueError(f'profiles[].schedulerName: Duplicate value: "{name}"')
        names.add(name)
        custom = {point: PluginSet.parse((p.get("plugins") or {}).get(point)) for point in ALL_POINTS}
        defaults = {"multiPoint": PluginSet(list(DEFAULT_MULTI_POINT))}
        merged = {point: merge_plugin_set(defaults.get(point, PluginSet()), custom[point]) for point in ALL_POINTS}
        args = {c["name"]: dict(c.get("args") or {}) for c in p.get("pluginConfig") or []}
        percentage = p.get("percentageOfNodesToScore")
        profile = expand_profile(name, merged, registry, args, None if percentage is None else int(percentage))
        queue_sorts.add(tuple(n for n, _ in profile.plugins["queueSort"]))
        profiles.append(profile)
    if len(queue_sorts) > 1:
        raise ValueError("profiles[].plugins.queueSort: Invalid value: has to match for all profiles")
    backoff = raw.get("podInitialBackoffSeconds")
    max_backoff = raw.get("podMaxBackoffSeconds")
    election = raw.get("leaderElection") or {}
    percentage = raw.get("percentageOfNodesToScore")
    timing = ElectionTiming(*(_duration(election, key, default) for key, default in (
        ("leaseDuration", 15.0), ("renewDeadline", 10.0), ("retryPeriod", 2.0))))
    leader_elect = bool(election.get("leaderElect", True))
    try:
        if leader_elect:  # as upstream, the durations are checked only when they are used
            timing.validate()
    except ValueError as err:
        raise ValueError(f"leaderElection: Invalid value: {err}") from None
    return SchedulerConfiguration(
        profiles, None if percentage is None else int(percentage),
        float(1 if backoff is None else backoff), float(10 if max_backoff is None else max_backoff),
        leader_elect, election.get("resourceName") or "kube-scheduler",
        election.get("resourceNamespace") or "kube-system", timing.lease_duration, timing.renew_deadline,
        timing.retry_period)


def _duration(section: Mapping[str, Any], key: str, default: float) -> float:
    """A metav1.Duration field ("15s", "1m30s"), or the default when absent."""
    value = section.get(key)
    if value in (None, ""):
        return default
    try:
        return parse_go_duration(str(value))
    except ValueError as err:
        raise ValueError(f"leaderElection.{key}: Invalid value: {value!r}: {err}") from None


def load_configuration(path: Path | None, registry: Mapping[str, type[Plugin]]) -> SchedulerConfiguration:
    """--config FILE, or the defaults (one default-scheduler profile) when no file is given."""
    raw = yaml.safe_load(Path(path).read_text()) if path is not None else None
    return parse_configuration(raw, registry)

"""DefaultPreemption (PostFilter): evict lower-priority pods so that a pending pod fits.

Candidates are dry-run on copies of the nodes that failed with a resolvable status: remove every
lower-priority pod, check the preemptor fits, then reprieve victims from the most important down
(PDB-violating ones first). The best node minimises, in order: PDB violations, the highest victim
priority, the sum of victim priorities, the number of victims; then prefers the latest start time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.api.selectors import LabelSelector, SelectorError
from pocketkube.client.rest import APIError
from pocketkube.scheduler.framework import (
    Code,
    CycleState,
    Diagnosis,
    FitError,
    Handle,
    NodeToStatus,
    Plugin,
    PostFilterResult,
    Status,
    error,
    is_success,
    unresolvable,
    unschedulable,
)
from pocketkube.scheduler.types import NodeInfo, PodInfo

log = logging.getLogger(__name__)
Obj = dict[str, Any]
NOT_HELPFUL = "Preemption is not helpful for scheduling"
_INT32_MAX = 2**31 - 1
_PODS = ResourceCatalog().resource("", "v1", "pods")


@dataclass
class Candidate:
    node: str
    victims: list[PodInfo]
    num_pdb_violations: int


def _start_time(p: PodInfo) -> str:
    # Pods without a start time count as starting now, i.e. after every recorded start.
    return ((p.pod.get("status") or {}).get("startTime")) or "9999-12-31T23:59:59Z"


def importance_key(p: PodInfo) -> tuple[int, str]:
    """Sort ascending = most important first (util.MoreImportantPod)."""
    return (-p.priority, _start_time(p))


def _terminating_by_preemption(p: PodInfo) -> bool:
    if not p.terminating:
        return False
    return any(c.get("type") == "DisruptionTarget" and c.get("reason") == "PreemptionByScheduler"
               for c in (p.pod.get("status") or {}).get("conditions") or [])


def filter_pods_with_pdb_violation(pods: list[PodInfo], pdbs: list[Obj]) -> tuple[list[PodInfo], list[PodInfo]]:
    allowed = [int((pdb.get("status") or {}).get("disruptionsAllowed") or 0) for pdb in pdbs]
    selectors: list[LabelSelector | None] = []
    for pdb in pdbs:
        try:
            selectors.append(LabelSelector.from_dict((pdb.get("spec") or {}).get("selector")))
        except SelectorError:
            selectors.append(None)
    violating: list[PodInfo] = []
    non_violating: list[PodInfo] = []
    for p in pods:
        violated = False
        if p.labels:
            for i, pdb in enumerate(pdbs):
                selector = selectors[i]
                if (pdb.get("metadata") or {}).get("namespace") != p.namespace or selector is None:
                    continue
                if selector.empty or selector.matches_nothing or not selector.matches(p.labels):
                    continue
                if p.name in ((pdb.get("status") or {}).get("disruptedPods") or {}):
                    continue
                allowed[i] -= 1
                if allowed[i] < 0:
                    violated = True
        (violating if violated else non_violating).append(p)
    return violating, non_violating


def pick_one_node(candidates: list[Candidate]) -> Candidate:
    def earliest_top_start(c: Candidate) -> str:
        top = c.victims[0].priority
        return min(_start_time(v) for v in c.victims if v.priority == top)

    score_funcs = (
        lambda c: -c.num_pdb_violations,
        lambda c: -c.victims[0].priority,
        lambda c: -sum(v.priority + _INT32_MAX + 1 for v in c.victims),
        lambda c: -len(c.victims),
    )
    remaining = candidates
    for func in score_funcs:
        best = max(func(c) for c in remaining)
        remaining = [c for c in remaining if func(c) == best]
        if len(remaining) == 1:
            return remaining[0]
    latest = max(earliest_top_start(c) for c in remaining)
    return next(c for c in remaining if earliest_top_start(c) == latest)


class DefaultPreemption(Plugin):
    name = "DefaultPreemption"

    def __init__(self, handle: Handle, args: Mapping[str, Any] | None = None) -> None:
        super().__init__(handle, args)
        self.min_candidate_nodes_percentage = int(self.args.get("minCandidateNodesPercentage", 10))
        self.min_candidate_nodes_absolute = int(self.args.get("minCandidateNodesAbsolute", 100))
        self.rng = random.Random()

    async def post_filter(self, state: CycleState, pi: PodInfo,
                          statuses: NodeToStatus) -> tuple[PostFilterResult | None, Status | None]:
        result, status = await self.preempt(state, pi, statuses)
        if status is not None and status.message:
            return result, Status(status.code, "preemption: " + status.message)
        return result, status

    # -- evaluation ------------------------------------------------------------------------------
    def pod_eligible_to_preempt_others(self, pi: PodInfo, nominated_status: Status) -> tuple[bool, str]:
        if pi.spec.get("preemptionPolicy") == "Never":
            return False, "not eligible due to preemptionPolicy=Never."
        nominated = (pi.pod.get("status") or {}).get("nominatedNodeName") or ""
        snapshot = self.handle.snapshot
        if nominated and snapshot is not None:
            if nominated_status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
                return True, ""
            ni = snapshot.get(nominated)
            if ni is not None:
                for p in ni.pods.values():
                    if p.priority < pi.priority and _terminating_by_preemption(p):
                        return False, "not eligible due to a terminating pod on the nominated node."
        return True, ""

    def calculate_num_candidates(self, num_nodes: int) -> int:
        n = num_nodes * self.min_candidate_nodes_percentage // 100
        return min(max(n, self.min_candidate_nodes_absolute), num_nodes)

    async def preempt(self, state: CycleState, pi: PodInfo,
                      statuses: NodeToStatus) -> tuple[PostFilterResult | None, Status | None]:
        latest = self.handle.listers.get("pods", pi.namespace, pi.name)
        if latest is not None and "pods" in self.handle.listers.stores:
            pi = PodInfo(latest)
        nominated = (pi.pod.get("status") or {}).get("nominatedNodeName") or ""
        ok, msg = self.pod_eligible_to_preempt_others(pi, statuses.get(nominated))
        if not ok:
            return None, unschedulable(msg)
        snapshot = self.handle.snapshot
        assert snapshot is not None
        all_nodes = snapshot.node_info_list
        if not all_nodes:
            return None, error("no nodes available")
        candidates, node_statuses = self.find_candidates(state, pi, all_nodes, statuses)
        if not candidates:
            node_statuses.absent = unresolvable(NOT_HELPFUL)
            fit = FitError(pi, len(all_nodes), Diagnosis(node_to_status=node_statuses))
            return PostFilterResult(""), unschedulable(str(fit))
        best = candidates[0] if len(candidates) == 1 else pick_one_node(candidates)
        status = await self.prepare_candidate(best, pi)
        if not is_success(status):
            return None, status
        return PostFilterResult(best.node), None

    def find_candidates(self, state: CycleState, pi: PodInfo, all_nodes: list[NodeInfo],
                        statuses: NodeToStatus) -> tuple[list[Candidate], NodeToStatus]:
        potential = statuses.nodes_for_status_code(all_nodes, Code.UNSCHEDULABLE)
        node_statuses = NodeToStatus()
        if not potential:
            return [], node_statuses
        pdbs = self.handle.listers.list("poddisruptionbudgets")
        offset = self.rng.randrange(len(potential))
        num_candidates = self.calculate_num_candidates(len(potential))
        non_violating: list[Candidate] = []
        violating: list[Candidate] = []
        for i in range(len(potential)):
            ni = potential[(offset + i) % len(potential)].clone()
            victims, violations, status = self.select_victims_on_node(state.clone(), pi, ni, pdbs)
            if is_success(status) and victims:
                (non_violating if violations == 0 else violating).append(Candidate(ni.name, victims, violations))
                if non_violating and len(non_violating) + len(violating) >= num_candidates:
                    break
                continue
            if is_success(status):
                status = error(f'expected at least one victim pod on node "{ni.name}"')
            assert status is not None
            node_statuses.set(ni.name, status)
        return non_violating + violating, node_statuses

    def select_victims_on_node(self, state: CycleState, pi: PodInfo, ni: NodeInfo,
                               pdbs: list[Obj]) -> tuple[list[PodInfo], int, Status | None]:
        fwk = self.handle.framework
        assert fwk is not None
        potential = [p for p in ni.pods.values() if p.priority < pi.priority]
        for p in potential:
            ni.remove_pod(p)
            fwk.run_pre_filter_extension_remove_pod(state, pi, p, ni)
        if not potential:
            return [], 0, unresolvable("No preemption victims found for incoming pod")
        status = fwk.run_filter_plugins_with_nominated_pods(state, pi, ni)
        if not is_success(status):
            return [], 0, status
        potential.sort(key=importance_key)
        violating, non_violating = filter_pods_with_pdb_violation(potential, pdbs)
        victims: list[PodInfo] = []

        def reprieve(p: PodInfo) -> bool:
            ni.add_pod(p)
            fwk.run_pre_filter_extension_add_pod(state, pi, p, ni)
            fits = is_success(fwk.run_filter_plugins_with_nominated_pods(state, pi, ni))
            if not fits:
                ni.remove_pod(p)
                fwk.run_pre_filter_extension_remove_pod(state, pi, p, ni)
                victims.append(p)
            return fits

        num_violating = sum(1 for p in violating if not reprieve(p))
        for p in non_violating:
            reprieve(p)
        if violating and non_violating:
            victims.sort(key=importance_key)
        return victims, num_violating, None

    # -- acting ---------------------------------------------------------------------------------
    async def prepare_candidate(self, c: Candidate, preemptor: PodInfo) -> Status | None:
        client = self.handle.client
        if client is None:
            return error("no API client to preempt with")
        pods = _PODS
        for victim in c.victims:
            try:
                await self._mark_disruption_target(client, pods, victim)
                await client.delete(pods, victim.name, victim.namespace)
            except APIError as err:
                if not err.not_found:
                    return error(f"preempting {victim.key}: {err}")
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                return error(f"preempting {victim.key}: {err}")
            recorder = self.handle.recorder
            if recorder is not None:
                await recorder.event(victim.pod, "Normal", "Preempted",
                                     f"Preempted by pod {preemptor.uid} on node {c.node}")
        nominator = self.handle.nominator
        if nominator is not None:
            for p in nominator.nominated_pods_for_node(c.node):
                if p.priority < preemptor.priority:
                    nominator.delete(p)
                    try:
                        await client.patch(pods, p.name, {"status": {"nominatedNodeName": None}}, p.namespace,
                                           subresource="status")
                    except (APIError, aiohttp.ClientError, OSError, TimeoutError) as err:
                        log.debug("clearing nominatedNodeName of %s: %s", p.key, err)
        return None

    async def _mark_disruption_target(self, client: Any, pods: Any, victim: PodInfo) -> None:
        conditions = [cond for cond in (victim.pod.get("status") or {}).get("conditions") or []
                      if cond.get("type") != "DisruptionTarget"]
        conditions.append({"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                           "message": f"{self.handle.scheduler_name}: preempting to accommodate a higher "
                                      f"priority pod",
                           "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
        await client.patch(pods, victim.name, {"status": {"conditions": conditions}}, victim.namespace,
                           subresource="status")

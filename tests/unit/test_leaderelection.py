"""Leader election settings and how a lost lease ends a component (the election itself runs against a real
server in tests/integration/test_leader_election.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pocketkube.cli.main import _until_signalled
from pocketkube.client.leaderelection import ElectionTiming, LeaderElectionLost
from pocketkube.scheduler.config import parse_configuration
from pocketkube.scheduler.plugins import REGISTRY


def test_default_timing_is_upstreams() -> None:
    timing = ElectionTiming()
    assert (timing.lease_duration, timing.renew_deadline, timing.retry_period) == (15, 10, 2)
    timing.validate()


@pytest.mark.parametrize(("timing", "message"), [
    (ElectionTiming(10, 10, 2), "leaseDuration must be greater than renewDeadline"),
    (ElectionTiming(1.5, 1, 0.2), "leaseDuration must be greater than renewDeadline"),  # the Lease keeps 1 s
    (ElectionTiming(15, 2.4, 2), r"renewDeadline must be greater than retryPeriod\*JitterFactor"),
    (ElectionTiming(15, 10, 0), "retryPeriod must be greater than zero"),
    (ElectionTiming(15, 0, 2), "renewDeadline must be greater than zero"),
    (ElectionTiming(0.5, 0.4, 0.1), "leaseDuration must be at least 1s"),
])
def test_timing_keeps_the_leader_deadline_inside_the_lease(timing: ElectionTiming, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        timing.validate()


def test_scheduler_configuration_leader_election_durations() -> None:
    config = parse_configuration(None, REGISTRY)
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15, 10, 2)
    config = parse_configuration({"leaderElection": {"leaseDuration": "30s", "renewDeadline": "20s",
                                                      "retryPeriod": "500ms"}}, REGISTRY)
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (30, 20, 0.5)
    with pytest.raises(ValueError, match="leaderElection.retryPeriod: Invalid value: 'soon'"):
        parse_configuration({"leaderElection": {"retryPeriod": "soon"}}, REGISTRY)
    with pytest.raises(ValueError, match="leaseDuration must be greater than renewDeadline"):
        parse_configuration({"leaderElection": {"leaseDuration": "5s"}}, REGISTRY)
    assert not parse_configuration({"leaderElection": {"leaderElect": False, "leaseDuration": "5s"}},
                                   REGISTRY).leader_elect


def test_a_component_that_lost_its_lease_exits_non_zero(caplog: pytest.LogCaptureFixture) -> None:
    async def component(stop: asyncio.Event) -> None:
        raise LeaderElectionLost("lost the lease kube-system/kube-controller-manager (identity x)")

    async def stopped(stop: asyncio.Event) -> None:
        return

    with caplog.at_level(logging.ERROR, "pocketkube"):
        assert _until_signalled(component) == 1
    assert "leaderelection lost: lost the lease kube-system/kube-controller-manager" in caplog.text
    assert _until_signalled(stopped) == 0

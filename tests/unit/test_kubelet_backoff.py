"""CrashLoopBackOff / ImagePullBackOff bookkeeping: 10 s doubling to 5 min, forgotten after 10 min of quiet."""

from __future__ import annotations

from pocketkube.kubelet.backoff import Backoff, format_duration

KEY = ("pod-uid", "app")


def test_delays_double_from_ten_seconds_to_five_minutes() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay(KEY, now=float(t)) for t in range(9)]
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300, 300]
    assert backoff.delay(KEY) == 300
    assert backoff.delay(("other", "app")) == 0
    assert backoff.next_delay(("other", "app"), now=0) == 10  # keys are independent


def test_crash_loop_first_restart_is_immediate_then_waits_after_each_exit() -> None:
    """The kubelet's flow: exit -> in back-off? wait : restart and advance."""
    backoff = Backoff()
    restarts, now, waits = [], 0.0, []
    finished_at = 0.0
    for _ in range(5):
        exited = finished_at
        while backoff.in_backoff(KEY, now, since=exited):
            now += 1
        waits.append(now - exited)
        backoff.next_delay(KEY, now)
        restarts.append(now)
        finished_at = now + 2  # it runs two seconds and crashes again
        now = finished_at
    assert waits == [0, 10, 20, 40, 80]


def test_window_since_last_failure_for_image_pulls() -> None:
    backoff = Backoff()
    assert not backoff.in_backoff(KEY, 100)
    backoff.next_delay(KEY, 100)
    assert backoff.in_backoff(KEY, 109.9) and not backoff.in_backoff(KEY, 110)
    backoff.next_delay(KEY, 110)
    assert backoff.in_backoff(KEY, 129) and not backoff.in_backoff(KEY, 130)


def test_reset_after_ten_minutes_of_running() -> None:
    backoff = Backoff()
    for t in range(4):
        backoff.next_delay(KEY, t)
    assert backoff.delay(KEY) == 80
    assert not backoff.reset_if_stable(KEY, running_since=1000, now=1600)  # exactly 10 min: not yet
    assert backoff.delay(KEY) == 80
    assert backoff.reset_if_stable(KEY, running_since=1000, now=1600.5)
    assert backoff.delay(KEY) == 0
    assert backoff.next_delay(KEY, 1601) == 10
    # Without a start time, quiet is counted from the last failure (image pulls).
    assert not backoff.reset_if_stable(KEY, None, now=2000)
    assert backoff.reset_if_stable(KEY, None, now=2201.5)
    assert not backoff.reset_if_stable(KEY, None, now=9999)  # nothing left to forget


def test_gc_drops_entries_quiet_for_ten_minutes() -> None:
    backoff = Backoff()
    backoff.next_delay(("old", "c"), 0)
    backoff.next_delay(("new", "c"), 500)
    backoff.gc(now=700)
    assert backoff.delay(("old", "c")) == 0 and backoff.delay(("new", "c")) == 10


def test_go_durations_in_messages() -> None:
    assert [format_duration(s) for s in (10, 40, 80, 160, 300, 0.5, 1.5, 0, 3725)] == [
        "10s", "40s", "1m20s", "2m40s", "5m0s", "500ms", "1.5s", "0s", "1h2m5s"]

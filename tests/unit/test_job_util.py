"""Helpers of the Job and CronJob controllers: index intervals, failure policy, back-off, cron schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pocketkube.api.cron import CronSchedule, EverySchedule, ScheduleError, parse_go_duration, parse_schedule
from pocketkube.controllers.cronjob import job_name, most_recent_schedule
from pocketkube.controllers.job import (
    BackoffRecord,
    backoff_remaining,
    format_indexes,
    match_pod_failure_policy,
    match_success_policy,
    next_backoff_record,
    parse_indexes,
    pod_generate_name,
    with_indexes,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --- completed/failed indexes ---------------------------------------------------------------------

@pytest.mark.parametrize(("indexes", "text"), [
    ([], ""),
    ([3], "3"),
    ([1, 2], "1,2"),
    ([1, 2, 3], "1-3"),
    ([0, 2, 3, 4, 7, 8, 10], "0,2-4,7,8,10"),
])
def test_format_indexes_as_upstream(indexes: list[int], text: str) -> None:
    assert format_indexes(with_indexes([], indexes)) == text


def test_parse_indexes_merges_clips_and_skips_corrupt_parts() -> None:
    assert parse_indexes("0,2-4,7,8", 10) == [(0, 0), (2, 4), (7, 8)]
    assert parse_indexes("1,2,3-5", 10) == [(1, 5)]  # touching intervals join
    assert parse_indexes("1,3-9", 5) == [(1, 1), (3, 4)]  # clipped to completions
    assert parse_indexes("1,6,2", 5) == [(1, 1)]  # stops at the first index out of range
    assert parse_indexes("x,2", 5) == [(2, 2)]
    assert parse_indexes("", 5) == []


def test_with_indexes_merges_into_existing_intervals() -> None:
    assert format_indexes(with_indexes(parse_indexes("0,2", 10), [1, 5])) == "0-2,5"


def test_pod_generate_name_keeps_the_index_visible() -> None:
    assert pod_generate_name("job", 3) == "job-3-"
    long = "x" * 60
    name = pod_generate_name(long, 12)
    assert name.endswith("-12-") and len(name) == 58


# --- pod failure policy ---------------------------------------------------------------------------

def failed_pod(exit_code: int, conditions: list[dict[str, Any]] | None = None, container: str = "main") -> dict:
    return {"metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "conditions": conditions or [],
                       "containerStatuses": [{"name": container, "state": {"terminated": {"exitCode": exit_code}}}]}}


POLICY = {"rules": [
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
    {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
    {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [2]}},
]}


def test_pod_failure_policy_rules_in_order() -> None:
    assert match_pod_failure_policy(POLICY, failed_pod(42)) == (
        "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1", True, "FailJob")
    disrupted = failed_pod(42, [{"type": "DisruptionTarget", "status": "True"}])
    assert match_pod_failure_policy(POLICY, disrupted) == (None, False, "Ignore")
    assert match_pod_failure_policy(POLICY, failed_pod(7)) == (None, True, "Count")
    assert match_pod_failure_policy(POLICY, failed_pod(2)) == (None, True, "FailIndex")
    assert match_pod_failure_policy(POLICY, failed_pod(1)) == (None, True, None)  # no rule: counts
    assert match_pod_failure_policy(POLICY, failed_pod(42, container="side")) == (None, True, "Count")
    assert match_pod_failure_policy(None, failed_pod(42)) == (None, True, None)


def test_pod_failure_policy_on_condition_fail_job_message() -> None:
    policy = {"rules": [{"action": "FailJob", "onPodConditions": [{"type": "ConfigIssue", "status": "True"}]}]}
    pod = failed_pod(1, [{"type": "ConfigIssue", "status": "True"}])
    assert match_pod_failure_policy(policy, pod)[0] == "Pod ns/p has condition ConfigIssue matching FailJob rule " \
                                                       "at index 0"


def test_success_policy() -> None:
    policy = {"rules": [{"succeededIndexes": "0,2"}, {"succeededCount": 3}]}
    assert match_success_policy(policy, 5, parse_indexes("0,2", 5)) == "Matched rules at index 0"
    assert match_success_policy(policy, 5, parse_indexes("1-3", 5)) == "Matched rules at index 1"
    assert match_success_policy(policy, 5, parse_indexes("1,3", 5)) is None
    assert match_success_policy(None, 5, parse_indexes("0-4", 5)) is None


# --- back-off -------------------------------------------------------------------------------------

def test_backoff_doubles_and_caps() -> None:
    last = utc(2024, 1, 1, 0, 0, 0)
    assert backoff_remaining(last, 10, 360, 0, None) == 0
    assert backoff_remaining(last, 10, 360, 1, last) == 10
    assert backoff_remaining(last + timedelta(seconds=4), 10, 360, 3, last) == 36
    assert backoff_remaining(last, 10, 360, 10, last) == 360
    assert backoff_remaining(last + timedelta(seconds=11), 10, 360, 1, last) == 0


def pod_finished_at(moment: datetime) -> dict:
    at = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"creationTimestamp": at},
            "status": {"containerStatuses": [{"name": "c", "state": {"terminated": {"finishedAt": at}}}]}}


def test_backoff_record_counts_failures_after_the_last_success() -> None:
    t = utc(2024, 1, 1)
    record = next_backoff_record(BackoffRecord(), [], [pod_finished_at(t), pod_finished_at(t + timedelta(seconds=5))])
    assert record == BackoffRecord(2, t + timedelta(seconds=5))
    record = next_backoff_record(record, [pod_finished_at(t + timedelta(seconds=10))],
                                 [pod_finished_at(t + timedelta(seconds=20))])
    assert record == BackoffRecord(1, t + timedelta(seconds=20))
    assert next_backoff_record(record, [pod_finished_at(t + timedelta(seconds=30))], []) == BackoffRecord()


# --- cron schedules -------------------------------------------------------------------------------

def nexts(schedule: str, start: datetime, n: int = 3, zone: str | None = "Etc/UTC") -> list[datetime]:
    sched = parse_schedule(schedule, zone)
    out = []
    moment: datetime | None = start
    for _ in range(n):
        assert moment is not None
        moment = sched.next(moment)
        assert moment is not None
        out.append(moment)
    return out


def test_standard_fields_names_steps_and_question_mark() -> None:
    start = utc(2024, 1, 1, 0, 0, 30)  # a Monday
    assert nexts("*/15 * * * *", start) == [utc(2024, 1, 1, 0, 15), utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 0, 45)]
    assert nexts("50/5 * * * ?", start) == [utc(2024, 1, 1, 0, 50), utc(2024, 1, 1, 0, 55), utc(2024, 1, 1, 1, 50)]
    assert nexts("0 9 * * MON-fri", start, 2) == [utc(2024, 1, 1, 9), utc(2024, 1, 2, 9)]
    assert nexts("0 0 1 jan,JUL *", start, 2) == [utc(2024, 7, 1), utc(2025, 1, 1)]


def test_day_of_month_and_week_or_unless_one_is_starred() -> None:
    start = utc(2024, 1, 1, 0, 0, 30)
    # Both restricted: either matches (the 15th, or a Friday).
    assert nexts("0 0 15 * 5", start, 3) == [utc(2024, 1, 5), utc(2024, 1, 12), utc(2024, 1, 15)]
    # "*/2" carries no star bit in robfig/cron: still OR (days 1, 11, 21, 31, or Mondays).
    assert nexts("0 0 */10 * 1", start, 3) == [utc(2024, 1, 8), utc(2024, 1, 11), utc(2024, 1, 15)]
    # "?" does: AND (every day that is a Monday).
    assert nexts("0 0 ? * 1", start, 2) == [utc(2024, 1, 8), utc(2024, 1, 15)]


def test_descriptors_and_every() -> None:
    start = utc(2024, 3, 10, 10, 20, 30)
    assert nexts("@hourly", start, 1) == [utc(2024, 3, 10, 11)]
    assert nexts("@daily", start, 1) == [utc(2024, 3, 11)]
    assert nexts("@weekly", start, 1) == [utc(2024, 3, 17)]  # a Sunday
    assert nexts("@monthly", start, 1) == [utc(2024, 4, 1)]
    assert nexts("@yearly", start, 1) == [utc(2025, 1, 1)]
    assert parse_schedule("@every 1h30m") == EverySchedule(5400)
    assert nexts("@every 90s", start, 2) == [start + timedelta(seconds=90), start + timedelta(seconds=180)]
    assert parse_schedule("@every 10ms") == EverySchedule(1)  # at least a second
    assert parse_go_duration("1.5h") == 5400 and parse_go_duration("2m3s") == 123


def test_time_zones() -> None:
    start = utc(2024, 1, 1, 0, 0, 30)
    assert nexts("0 9 * * *", start, 1, zone="Asia/Tokyo") == [utc(2024, 1, 2, 0)]
    assert nexts("TZ=America/New_York 0 9 * * *", start, 1, zone=None) == [utc(2024, 1, 1, 14)]
    # Across the spring-forward change the wall-clock time still holds: 09:00 EDT is 13:00 UTC.
    assert nexts("0 9 * * *", utc(2024, 3, 10, 0), 2, zone="America/New_York") == [utc(2024, 3, 10, 13),
                                                                                   utc(2024, 3, 11, 13)]
    assert isinstance(parse_schedule("* * * * *"), CronSchedule)


@pytest.mark.parametrize(("schedule", "message"), [
    ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
    ("60 * * * *", "end of range (60) above maximum (59): 60"),
    ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
    ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
    ("*/0 * * * *", "step of range should be a positive number: */0"),
    ("* * * * 7", "end of range (7) above maximum (6): 7"),
    ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
    ("@fortnightly", "unrecognized descriptor: @fortnightly"),
    ("x * * * *", 'failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax'),
])
def test_invalid_schedules(schedule: str, message: str) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_schedule(schedule, "Etc/UTC")
    assert str(err.value) == message


def test_most_recent_schedule_counts_missed_runs() -> None:
    minute = parse_schedule("* * * * *", "Etc/UTC")
    start = utc(2024, 1, 1, 0, 0, 0)
    assert most_recent_schedule(minute, start, start + timedelta(seconds=59)) == (None, 0)
    assert most_recent_schedule(minute, start, start + timedelta(seconds=61)) == (utc(2024, 1, 1, 0, 1), 0)
    assert most_recent_schedule(minute, start, utc(2024, 1, 1, 0, 5, 10)) == (utc(2024, 1, 1, 0, 5), 5)
    assert most_recent_schedule(minute, start, utc(2024, 1, 1, 3, 0, 30)) == (utc(2024, 1, 1, 3, 0), 180)
    irregular = parse_schedule("30 6-16/4 * * 1-5", "Etc/UTC")
    assert most_recent_schedule(irregular, start, utc(2024, 1, 10, 12))[0] == utc(2024, 1, 10, 10, 30)
    every = parse_schedule("@every 7m")
    assert most_recent_schedule(every, start, start + timedelta(minutes=30)) == (start + timedelta(minutes=28), 4)
    with pytest.raises(ScheduleError):
        most_recent_schedule(parse_schedule("0 0 31 2 *", "Etc/UTC"), start, start + timedelta(days=400))


def test_job_name_is_minutes_since_the_epoch() -> None:
    assert job_name("backup", utc(2024, 1, 1)) == "backup-28401120"

"""kube-controller-manager's --node-monitor-grace-period, --node-startup-grace-period and
--terminated-pod-gc-threshold on `pocketkube controller-manager` and `pocketkube server`: Go's syntax,
upstream's defaults, pflag's errors, and the way from the flags to the controllers."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pocketkube.cli.flags import duration_flag, go_duration, int32_flag, parse_go_duration
from pocketkube.cli.main import build_parser, controller_manager_options, main
from pocketkube.controllers.base import ControllerContext, ControllerSettings
from pocketkube.controllers.nodelifecycle import NodeLifecycleController
from pocketkube.controllers.podgc import PodGCController
from pocketkube.launcher import ControllerManagerOptions

S = 1_000_000_000


@pytest.mark.parametrize(("text", "nanos"), [
    ("40s", 40 * S), ("1m0s", 60 * S), ("1h2m3.5s", 3723 * S + S // 2), ("1.5h", 5400 * S), ("300ms", 3 * S // 10),
    (".5s", S // 2), ("1.s", S), ("0", 0), ("-0", 0), ("+3s", 3 * S), ("-2m", -120 * S), ("1us", 1_000),
    ("1µs", 1_000), ("7ns", 7), ("1h1h", 7200 * S),
])
def test_go_durations(text: str, nanos: int) -> None:
    assert parse_go_duration(text) == nanos


@pytest.mark.parametrize(("text", "message"), [
    ("", 'time: invalid duration ""'),
    ("abc", 'time: invalid duration "abc"'),
    (".", 'time: invalid duration "."'),
    ("s", 'time: invalid duration "s"'),
    ("- 1s", 'time: invalid duration "- 1s"'),
    ("40", 'time: missing unit in duration "40"'),
    ("1m30", 'time: missing unit in duration "1m30"'),
    ("5d", 'time: unknown unit "d" in duration "5d"'),
    ("1h 2m", 'time: unknown unit "h " in duration "1h 2m"'),
    ("9999999999h", 'time: invalid duration "9999999999h"'),  # past int64 nanoseconds
])
def test_bad_go_durations_get_gos_messages(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_go_duration(text)
    assert str(err.value) == message


def test_duration_flags_in_seconds_and_pflags_error() -> None:
    assert duration_flag("--node-monitor-grace-period", "2s") == 2.0
    assert duration_flag("--node-monitor-grace-period", "1m30s") == 90.0
    assert duration_flag("--node-monitor-grace-period", "250ms") == 0.25
    with pytest.raises(ValueError) as err:
        duration_flag("--node-monitor-grace-period", "forty")
    assert str(err.value) == ('invalid argument "forty" for "--node-monitor-grace-period" flag: '
                              'time: invalid duration "forty"')
    with pytest.raises(ValueError, match='invalid argument "-5s" for "--node-startup-grace-period" flag: must not '
                                         'be negative'):
        duration_flag("--node-startup-grace-period", "-5s")


@pytest.mark.parametrize(("text", "value"), [
    ("12500", 12500), ("0", 0), ("-1", -1), ("+7", 7), ("0x10", 16), ("0o17", 15), ("0b11", 3), ("010", 8),
    ("1_000", 1000), ("2147483647", 2**31 - 1), ("-2147483648", -(2**31)),
])
def test_int32_flags_parse_as_strconv_parseint_base_0(text: str, value: int) -> None:
    assert int32_flag("--terminated-pod-gc-threshold", text) == value


@pytest.mark.parametrize(("text", "why"), [
    ("", "invalid syntax"), ("abc", "invalid syntax"), ("1.5", "invalid syntax"), ("1e5", "invalid syntax"),
    (" 5", "invalid syntax"), ("5 ", "invalid syntax"), ("08", "invalid syntax"), ("1__0", "invalid syntax"),
    ("_1", "invalid syntax"), ("0x", "invalid syntax"), ("\uff11", "invalid syntax"),
    ("2147483648", "value out of range"), ("-2147483649", "value out of range"),
])
def test_bad_int32_flags(text: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        int32_flag("--terminated-pod-gc-threshold", text)
    assert str(err.value) == (f'invalid argument "{text}" for "--terminated-pod-gc-threshold" flag: '
                              f'strconv.ParseInt: parsing "{text}": {why}')


@pytest.mark.parametrize(("seconds", "text"), [
    (40, "40s"), (60, "1m0s"), (90, "1m30s"), (3723, "1h2m3s"), (1.5, "1.5s"), (0.25, "250ms"), (0, "0s"),
])
def test_periods_are_passed_on_as_go_prints_them(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
    assert parse_go_duration(text) == round(seconds * S)


def _options(*argv: str) -> ControllerManagerOptions:
    args = build_parser().parse_args(list(argv))
    return controller_manager_options(args, Path("/tmp/storage"))


@pytest.mark.parametrize("command", ["controller-manager", "server"])
def test_upstreams_defaults(command: str) -> None:
    options = _options(command)
    assert (options.node_monitor_grace_period, options.node_startup_grace_period,
            options.terminated_pod_gc_threshold) == (40.0, 60.0, 12500)
    assert options.settings == ControllerSettings(40.0, 60.0, 12500)


@pytest.mark.parametrize("command", ["controller-manager", "server"])
def test_flags_set_the_controllers_settings(command: str) -> None:
    options = _options(command, "--node-monitor-grace-period=2s", "--node-startup-grace-period", "1m30s",
                       "--terminated-pod-gc-threshold=0")
    assert options.settings == ControllerSettings(node_monitor_grace_period=2.0, node_startup_grace_period=90.0,
                                                  terminated_pod_gc_threshold=0)


def test_server_passes_the_flags_to_its_controller_manager() -> None:
    """What `server` gives the controller manager it starts reads back as the same settings."""
    options = _options("server", "--node-monitor-grace-period=1.5s", "--node-startup-grace-period=45s",
                       "--terminated-pod-gc-threshold=100")
    args = options.args()
    assert args[args.index("--node-monitor-grace-period") + 1] == "1.5s"
    assert args[args.index("--node-startup-grace-period") + 1] == "45s"
    assert args[args.index("--terminated-pod-gc-threshold") + 1] == "100"
    child = _options("controller-manager", *args)
    assert child.settings == options.settings
    assert child.local_storage_path == options.local_storage_path
    # Defaults go along too, in Go's form.
    defaults = _options("server").args()
    assert defaults[defaults.index("--node-startup-grace-period") + 1] == "1m0s"


@pytest.mark.parametrize("command", [["controller-manager", "--kubeconfig", "/nonexistent/kubeconfig"],
                                     ["server", "--disable-agent"]])
@pytest.mark.parametrize(("flag", "message"), [
    ("--node-monitor-grace-period=40", 'invalid argument "40" for "--node-monitor-grace-period" flag: '
                                       'time: missing unit in duration "40"'),
    ("--node-startup-grace-period=soon", 'invalid argument "soon" for "--node-startup-grace-period" flag: '
                                         'time: invalid duration "soon"'),
    ("--terminated-pod-gc-threshold=many", 'invalid argument "many" for "--terminated-pod-gc-threshold" flag: '
                                           'strconv.ParseInt: parsing "many": invalid syntax'),
])
def test_bad_values_exit_2_with_one_line(command: list[str], flag: str, message: str, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Before anything starts: the controller manager's kubeconfig is not read, the server's data dir not
    made."""
    if command[0] == "server":
        command = [*command, "--data-dir", str(tmp_path / "data")]
    with caplog.at_level(logging.ERROR, logger="pocketkube"):
        assert main([*command, flag]) == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [message]
    assert not (tmp_path / "data").exists()


def _context(settings: ControllerSettings) -> ControllerContext:
    """Enough of a context to build controllers: nothing runs, so no client is used."""
    from pocketkube.api.kinds import ResourceCatalog
    from pocketkube.client.informer import InformerFactory

    client: Any = SimpleNamespace()
    recorder: Any = SimpleNamespace()
    return ControllerContext(client, InformerFactory(client), recorder, ResourceCatalog(), settings=settings)


async def test_controllers_take_the_settings() -> None:
    ctx = _context(ControllerSettings(node_monitor_grace_period=2.0, node_startup_grace_period=5.0,
                                      terminated_pod_gc_threshold=7))
    lifecycle = NodeLifecycleController(ctx)
    assert (lifecycle.grace_period, lifecycle.startup_grace_period) == (2.0, 5.0)
    assert PodGCController(ctx).terminated_pod_threshold == 7
    assert PodGCController(ctx, terminated_pod_threshold=3).terminated_pod_threshold == 3  # an argument wins


async def test_without_settings_controllers_keep_their_own_periods() -> None:
    """In-process tests shrink periods in subclasses (with_options, class attributes); no flag overrides them."""
    ctx = _context(ControllerSettings())
    lifecycle = NodeLifecycleController(ctx)
    assert (lifecycle.grace_period, lifecycle.startup_grace_period) == (40.0, 60.0)
    fast = NodeLifecycleController.with_options(grace_period=2.0, startup_grace_period=3.0)(ctx)
    assert (fast.grace_period, fast.startup_grace_period) == (2.0, 3.0)
    assert PodGCController(ctx).terminated_pod_threshold == 12500

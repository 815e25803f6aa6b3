"""Back-off bookkeeping for restarting crashed containers (CrashLoopBackOff) and retrying failed image pulls
(ImagePullBackOff), as the kubelet keeps it: a window per key that starts at 10 s, doubles on every further
failure up to 5 min, and is forgotten after 10 min without trouble.

How the kubelet uses it (keys are any hashable: (pod uid, container name) for containers, (pod uid, image)
for pulls):

- a container exited at `finished_at` and the restart policy wants it back::

      backoff.reset_if_stable(key, started_at, finished_at)     # it ran > 10 min: start over
      if backoff.in_backoff(key, now, since=finished_at):       # waiting: reason CrashLoopBackOff,
          ...  # message f"back-off {format_duration(backoff.delay(key))} restarting failed container=..."
      else:
          backoff.next_delay(key, now)                          # restart it now
  so the first crash restarts at once and the next ones wait 10 s, 20 s, 40 s, ... 300 s after the exit;

- an image pull::

      backoff.reset_if_stable(key, None, now)                   # no failed pull for 10 min: start over
      if backoff.in_backoff(key, now): ...                      # ImagePullBackOff, 'Back-off pulling image "x"'
      else: pull, and on failure backoff.next_delay(key, now)   # 10 s, 20 s, ... after each failure.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

INITIAL_DELAY = 10.0
MAX_DELAY = 300.0
STABLE_AFTER = 600.0


@dataclass
class _Window:
    delay: float
    updated_at: float


class Backoff:
    def __init__(self, initial: float = INITIAL_DELAY, maximum: float = MAX_DELAY,
                 stable_after: float = STABLE_AFTER) -> None:
        self.initial = initial
        self.maximum = maximum
        self.stable_after = stable_after
        self._windows: dict[Hashable, _Window] = {}

    def next_delay(self, key: Hashable, now: float) -> float:
        """Records a failure handled at `now` (a container being restarted, a pull that failed) and returns
        the back-off window that now applies to the key: 10 s the first time, then doubled up to 5 min."""
        window = self._windows.get(key)
        delay = self.initial if window is None else min(window.delay * 2, self.maximum)
        self._windows[key] = _Window(delay, now)
        return delay

    def in_backoff(self, key: Hashable, now: float, since: float | None = None) -> bool:
        """Whether the key is still inside its window at `now`. The window runs from `since` (a container's
        exit time) or, when None, from the last next_delay call (a pull's last failure)."""
        window = self._windows.get(key)
        if window is None:
            return False
        start = window.updated_at if since is None else since
        return now - start < window.delay

    def delay(self, key: Hashable) -> float:
        """The current window's length (0 when the key has none), for messages."""
        window = self._windows.get(key)
        return window.delay if window is not None else 0.0

    def reset_if_stable(self, key: Hashable, running_since: float | None, now: float) -> bool:
        """Forgets the key once it has gone more than 10 min without trouble: a container that has been
        running since `running_since`, or, when None, since the last recorded failure. True when forgotten."""
        window = self._windows.get(key)
        if window is None:
            return False
        start = window.updated_at if running_since is None else running_since
        if now - start > self.stable_after:
            del self._windows[key]
            return True
        return False

    def gc(self, now: float) -> None:
        """Drops the keys whose last failure is more than 10 min old (pods gone, containers long stable);
        the kubelet calls this from its housekeeping."""
        for key in [k for k, w in self._windows.items() if now - w.updated_at > self.stable_after]:
            del self._windows[key]


def format_duration(seconds: float) -> str:
    """A duration as Go prints one ("10s", "5m0s", "1m20s", "1.5s", "500ms"), as the kubelet's messages show."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        for unit, scale in (("ms", 1e3), ("µs", 1e6), ("ns", 1e9)):
            if seconds * scale >= 1 or unit == "ns":
                return f"{sign}{_trim(seconds * scale)}{unit}"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{_trim(secs)}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return sign + text


def _trim(value: float) -> str:
    return f"{round(value, 9):.9f}".rstrip("0").rstrip(".")

"""When `meshctl up` starts a part again that exited: after a backoff that doubles with each exit
in a window, and not at all once it has exited more often than the window allows (a part that
crashes at every start is reported, not restarted forever)."""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field


def exit_reason(returncode: int) -> str:
    """How a process ended, as `meshctl status` says it: `exit code 1`, `killed by SIGKILL`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class RestartPolicy:
    backoff: float
    """seconds before the first restart; each further exit within `window` doubles it"""
    backoff_cap: float
    limit: int
    """exits within `window` that are restarted; one more and the part is given up"""
    window: float
    _exits: deque[float] = field(default_factory=deque)

    def after_exit(self, now: float) -> float | None:
        """Seconds to wait before starting the part again after an exit at `now` (monotonic), or
        None when it has exited too often to start again."""
        self._exits.append(now)
        while self._exits and self._exits[0] <= now - self.window:
            self._exits.popleft()
        if len(self._exits) > self.limit:
            return None
        return min(self.backoff_cap, self.backoff * 2.0 ** (len(self._exits) - 1))

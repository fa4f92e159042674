"""Named crash points for the reliability suite: where a test may stop a process to kill it.

A guarantee such as "a promotion killed after the alias moved and before the history row
committed ends, after a retry, with the alias on its target and exactly one history row" can be
tested only by killing the process at exactly that instant. The code marks such instants with
`checkpoint("promotion.alias_moved")`. Normally that is a dictionary lookup in the environment
and nothing else. When the process was started with `AUTOPILOT_FAULT_POINTS` naming the point
(comma-separated) and `AUTOPILOT_FAULT_DIR` naming a folder, the process writes the marker file
`<folder>/<point>.<pid>` and then waits there, so the test can see the marker and `kill -9` it.
The wait is bounded (`AUTOPILOT_FAULT_PAUSE_SECONDS`, 300 s by default); afterwards the process
goes on as if nothing happened, so a forgotten variable delays a run but never corrupts it.

Nothing here reads or writes anything unless both variables are set.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["ENV_DIR", "ENV_POINTS", "checkpoint"]

ENV_POINTS = "AUTOPILOT_FAULT_POINTS"
ENV_DIR = "AUTOPILOT_FAULT_DIR"
ENV_PAUSE = "AUTOPILOT_FAULT_PAUSE_SECONDS"


def checkpoint(name: str) -> None:
    """Pause here (to be killed) when the environment names this point; otherwise do nothing."""
    points = os.environ.get(ENV_POINTS)
    if not points or name not in points.split(","):
        return
    folder = os.environ.get(ENV_DIR)
    if not folder:
        return
    marker = Path(folder) / f"{name}.{os.getpid()}"
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + float(os.environ.get(ENV_PAUSE, "300"))
    while time.monotonic() < deadline:
        time.sleep(0.05)

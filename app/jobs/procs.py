"""Process helpers for jobs: identity of a pid across server restarts, and killing a whole process group.

Each job step starts in its own session (so its own process group, pgid == pid); killing the group takes
torchrun and all its workers down together. A stored pid is only trusted if the process start time read
from /proc still matches, so a pid reused by an unrelated process is never mistaken for the job.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, /proc/<pid>/stat field 22), or None.

    None when the process does not exist, is a zombie, or /proc is unavailable (non-Linux).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):  # zombie / dead: the job is over
        return None
    return fields[19]  # field 22 overall = index 19 after (pid, comm)


def pid_alive(pid: int | None, start_time: str | None = None) -> bool:
    """Whether `pid` runs and (when `start_time` is given and /proc exists) is the same process as before."""
    if not pid or pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        now = process_start_time(pid)
        return now is not None and (start_time is None or now == start_time)
    try:  # no /proc: best effort
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int = signal.SIGTERM) -> bool:
    """Send `sig` to the whole process group `pgid`; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # not ours (pid reuse): never touch it
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still exists (signal 0 probes without delivering anything)."""
    return signal_group(pgid, 0)


def kill_group(pgid: int) -> bool:
    """SIGKILL the whole group (after a SIGTERM grace period ran out)."""
    return signal_group(pgid, signal.SIGKILL)

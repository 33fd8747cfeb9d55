"""Whether the process that left a pid behind (in the training lock, in a temp directory's name)
still runs: a run killed with SIGKILL cleans nothing up, so its leftovers are judged by this."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while `pid` runs, also when it belongs to another user (we may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

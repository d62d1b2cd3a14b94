"""One run per output location: an exclusive lock file beside the output (see :mod:`llm_unlearn.runs`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def lock_path(final: str | Path) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class OutputLock:
    """An exclusive lock on an output location: ``PARENT/.NAME.lock``, created with ``O_EXCL``, holding the owner's
    pid, host, start time and command. A lock whose owner is gone (same host, pid not alive) is taken over."""

    def __init__(self, final: str | Path, flag: str = "--output_dir"):
        self.final, self.path, self.flag, self.held = Path(final), lock_path(final), flag, False

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        import socket
        import sys
        import time

        if self.held:
            return
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        me["command"] = " ".join(sys.argv[:1] + sys.argv[1:8])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                stale = owner.get("host") == me["host"] and isinstance(owner.get("pid"), int)
                if stale and owner["pid"] != me["pid"] and not _pid_alive(owner["pid"]):
                    logger.warning("taking over %s: its run (pid %s) is gone", self.path, owner["pid"])
                    self.path.unlink(missing_ok=True)
                    continue
                if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                    self.held = True  # this process already holds it (a stage inside a stage)
                    return
                who = (
                    f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('since')}"
                    if owner
                    else "an unknown process"
                )
                raise FileExistsError(
                    f"{self.flag} {self.final} is being written by another run ({who}; lock {self.path}): wait for "
                    f"it to finish or choose another {self.flag}; if that run is gone, delete {self.path}"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise FileExistsError(f"{self.path}: could not take the lock of {self.final}; delete it if no run uses it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

"""Logging: one line per event to stderr (journald) and to a daily file with per-job history.

Why daily files: operators of DR systems read "what happened on the night of the failover" by
date; the file ``hodr-YYYY-MM-DD.log`` rolls at midnight and old ones are kept ``keep_days``.
Each line names the job (thread) so the capture, sender, receiver and apply histories can be
grepped apart.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"


class DailyFileHandler(logging.handlers.TimedRotatingFileHandler):
    """Rotates at midnight to ``hodr-YYYY-MM-DD.log``."""

    def __init__(self, directory: Path, keep_days: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory / "hodr.log", when="midnight", backupCount=keep_days, encoding="utf-8")
        self.namer = lambda name: str(Path(name).with_name("hodr-" + name.rsplit(".", 1)[-1] + ".log"))


def setup(level: str = "info", directory: Path | None = None, keep_days: int = 14) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(stream)
    if directory is not None:
        fh = DailyFileHandler(directory, keep_days)
        fh.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(fh)

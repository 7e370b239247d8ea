"""The host process's log: leveled lines on stderr, for a terminal and for journald alike.

Under systemd (`$JOURNAL_STREAM` set: stderr goes to the journal) each line starts with its
syslog priority as `<N>`, which journald reads as the entry's level and strips, and carries
no timestamp (the journal has its own). Elsewhere lines read `2026-12-04 18:00:00 WARNING
powerflow.link: node=2 ...`. Messages put the facts as key=value pairs so they can be
filtered (`journalctl -u powerflow | grep node=2`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2}  # syslog(3) levels, as sd-daemon(3) prefixes them


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = PRIORITY.get(record.levelno, 6)
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(level: str = "info") -> bool:
    """Send the `powerflow` loggers to stderr at `level`; True when stdout is a terminal
    (the host then also draws its live table there)."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("powerflow")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    root.propagate = False
    return sys.stdout.isatty()


def kv(**fields: Any) -> str:
    """key=value pairs, values with spaces quoted: the one shape of a log message's facts."""
    out = []
    for k, v in fields.items():
        s = str(v)
        out.append(f'{k}="{s}"' if (" " in s or not s) else f"{k}={s}")
    return " ".join(out)

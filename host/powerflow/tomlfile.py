"""Reading the project's TOML files (racks, scenarios, tokens, fault scripts) with errors that
name the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def read_toml(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """The parsed file; `error` (raised with the file's name and the cause) if it cannot be
    read or is not TOML."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except OSError as e:
        raise error(f"{p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{p}: not valid TOML: {e}") from None

"""Reading the project's text files (racks, scenarios, tokens, fault scripts as TOML; MATPOWER
cases) with errors that name the file: a missing file, a binary one, bad TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def not_text(p: Path, e: UnicodeDecodeError) -> str:
    """The one wording for a file that is not UTF-8 text (a binary file given by mistake)."""
    return (f"{p}: not a text file (UTF-8 expected; byte 0x{e.object[e.start]:02x} at offset "
            f"{e.start})")


def read_text(path: str | Path, error: type[Exception]) -> str:
    """The file's text; `error` naming the file if it cannot be read or is not UTF-8 text."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"{p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise error(not_text(p, e)) from None


def read_toml(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """The parsed file; `error` (raised with the file's name and the cause) if it cannot be
    read, is not text or is not TOML."""
    p = Path(path)
    try:
        return tomllib.loads(read_text(p, error))
    except tomllib.TOMLDecodeError as e:
        raise error(f"{p}: not valid TOML: {e}") from None

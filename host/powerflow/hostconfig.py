"""`powerflow run --config FILE`: the host's settings in a TOML file instead of flags.

Every key is one of `run`'s long options without the dashes (`port = 8470`, `tls-cert =
"/etc/powerflow/cert.pem"`, `emulate = true`; underscores work too), plus `rack` for the rack
file. Each value goes through the option's own parsing, so the file and the flag accept and
refuse the same things, in the same words, with the file and the key named. Relative paths are
taken from the folder of the config file, as a service manager's files are. Flags given on
the command line override the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from powerflow.tomlfile import read_toml

# options whose values are files or folders: relative to the config file's folder
PATH_OPTIONS = {"rack", "db", "state_dir", "faults", "tokens", "tls_cert", "tls_key",
                "physics_log", "jobs"}
NOT_IN_FILES = {"help", "config"}


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def load_run_config(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The settings of `path` as `parser` defaults (argparse dest -> parsed value)."""
    p = Path(path)
    data = read_toml(p, ConfigError)
    actions = {a.dest: a for a in parser._actions if a.dest not in NOT_IN_FILES}
    out: dict[str, Any] = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        a = actions.get(dest)
        if a is None:
            known = ", ".join(sorted(d.replace("_", "-") for d in actions))
            raise ConfigError(f"{p}: unknown setting {key!r} (known: {known})")
        out[dest] = _value(p, key, a, value)
        if dest in PATH_OPTIONS:
            out[dest] = str((p.parent / out[dest]).resolve())
    return out


def _value(p: Path, key: str, a: argparse.Action, value: Any) -> Any:
    if a.nargs == 0:  # a flag such as emulate or insecure-http
        if not isinstance(value, bool):
            raise ConfigError(f"{p}: {key}: expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{p}: {key}: expected a string or a number, got {value!r}")
    text = str(value)
    try:
        parsed = a.type(text) if callable(a.type) else text
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise ConfigError(f"{p}: {key}: {e}") from None
    if a.choices is not None and parsed not in a.choices:
        raise ConfigError(f"{p}: {key}: {text!r} is not one of {', '.join(map(str, a.choices))}")
    return parsed

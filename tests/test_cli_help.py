"""The CLI explains itself: every option of every command has help, value options name what
they take, and the version is the package's."""

from __future__ import annotations

import argparse
import subprocess
import sys

import powerflow
from powerflow.cli import build_parser


def _commands(p: argparse.ArgumentParser, path: str = "powerflow"
              ) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, p)]
    for a in p._actions:  # argparse keeps its tree here; there is no public walk
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                out += _commands(sp, f"{path} {name}")
    return out


def test_every_option_has_help_and_value_options_say_what_they_take() -> None:
    missing, unnamed = [], []
    for path, p in _commands(build_parser()):
        for a in p._actions:
            if isinstance(a, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not a.help:
                missing.append(f"{path} {a.option_strings or a.dest}")
            if a.option_strings and a.nargs != 0 and a.choices is None and a.metavar is None:
                unnamed.append(f"{path} {a.option_strings[0]}")
    assert not missing, f"options without help: {missing}"
    assert not unnamed, f"value options without a metavar (unit or kind): {unnamed}"


def test_version_is_the_package_s() -> None:
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "--version"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == f"powerflow {powerflow.__version__}"

"""Tokens files: bad ones are refused naming the file, entry and field; roles are checked."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from powerflow.api.auth import AuthConfigError, Tokens
from tests.conftest import ROOT


@pytest.mark.parametrize("text,msg", [
    ('[[token]]\nname = "a"\nrole = "admin"\nsha256 = "' + "0" * 64 + '"\n', "field 'role'"),
    ('[[token]]\nname = "a"\nrole = "read"\nsha256 = "abc"\n', "field 'sha256'"),
    ('[[token]]\nrole = "read"\nsha256 = "' + "0" * 64 + '"\n', "field 'name'"),
    ("", "no [[token]] entries"),
    ("[[token]\n", "not valid TOML"),
])
def test_bad_tokens_files_are_refused(tmp_path, text, msg) -> None:
    p = tmp_path / "t.toml"
    p.write_text(text)
    with pytest.raises(AuthConfigError, match=msg.replace("[", r"\[")):
        Tokens.load(p)
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "run",
                        str(ROOT / "examples" / "racks" / "small.toml"), "--tokens", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and msg in r.stderr


def test_roles_from_secrets(tmp_path) -> None:
    p = tmp_path / "t.toml"
    p.write_text(f'[[token]]\nname = "ro"\nrole = "read"\n'
                 f'sha256 = "{hashlib.sha256(b"s3cret").hexdigest()}"\n')
    t = Tokens.load(p)
    who = t.check("Bearer s3cret")
    assert who is not None and who.name == "ro" and not who.may_write
    assert t.check("Bearer other") is None and t.check(None) is None
    assert Tokens().check(None).may_write  # no tokens file: the local operator


def test_network_bind_needs_tokens() -> None:
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "run",
                        str(ROOT / "examples" / "racks" / "small.toml"), "--bind", "0.0.0.0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs --tokens" in r.stderr

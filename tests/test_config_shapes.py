"""Config files of every wrong shape and every semantic mistake the security review found:
refused at load time by `powerflow run` with rc 2 and a message naming the file, the entry
and the field — never a traceback, never a half-started host.

Each case is a real file handed to the real CLI. The rack is read before anything starts,
so a refused file costs a process start, not a rack."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SMALL = (ROOT / "examples" / "racks" / "small.toml").read_text()
DIGEST = hashlib.sha256(b"a-good-long-secret").hexdigest()
OTHER = hashlib.sha256(b"another-good-secret").hexdigest()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "powerflow.cli", "run", *args],
                          capture_output=True, text=True, timeout=60)


def refused(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    for n in needles:
        assert n in r.stderr, (n, r.stderr[-1000:])


MINIMAL = '[feed]\nvoltage = 48.0\nbreaker_limit_w = 1000\n[[segment]]\nid = "A"\n'


def first_node_with(text: str, extra: str) -> str:
    """The small rack with `extra` lines added to its first [[node]]."""
    return text.replace('[[node]]\nid = 1\n', f'[[node]]\nid = 1\n{extra}\n', 1)


RACK_CASES = {
    # shapes (each crashed with a traceback before)
    "segment table": ("[segment]\nid = 'X'\n" + SMALL.split("[[segment]]", 1)[0], "segment: expected an array of tables"),
    "node table": (SMALL.replace("[[node]]\nid = 1\n", "[node]\nid = 1\n", 1).split("[[node]]")[0],
                   "node: expected an array of tables"),
    "rack = 5": ("rack = 5\n" + MINIMAL, "[rack]: expected a table"),
    "node entry not a table": ("node = [3]\n[rack]\nname = 'x'\nbus_voltage = 12.0\n" + MINIMAL,
                               "[[node]] #1: expected a table of fields"),
    "policy not a table": ("policy = 3\n" + SMALL, "[policy]: expected a table"),
    "profile not a table": ("profile = 3\n" + SMALL, "[profile]: expected a table"),
    # semantic mistakes (each accepted silently before)
    "vout_max under the bus": (first_node_with(SMALL.replace("vout_max = 14.0", "vout_max = 5.0", 1), ""),
                               "field 'vout_max': expected at least the bus voltage"),
    "rating over V x I": (SMALL.replace("rating_w = 600.0", "rating_w = 6000.0", 1),
                          "field 'rating_w': expected at most vout_max x iout_max"),
    "device id empty": (SMALL.replace('id = "gpu0"', 'id = ""', 1), "field 'id': expected an id"),
    "device id a path": (SMALL.replace('id = "gpu0"', 'id = "rack/../gpu0"', 1),
                         "field 'id': expected an id"),
    "node_output_w unknown node": (SMALL + "\n[policy]\nnode_output_w = { 99 = 10.0 }\n",
                                   "no node 99"),
    "node_output_w over rating": (SMALL + "\n[policy]\nnode_output_w = { 1 = 9000.0 }\n",
                                  "node_output_w.1': expected W from 0 to 600"),
    "tie_override unknown": (SMALL + "\n[policy]\ntie_override = { nope = true }\n",
                             "no tie switch 'nope'"),
    "tcp: with nothing": (first_node_with(SMALL, 'link = "tcp:"'), None),
    "serial: with nothing": (first_node_with(SMALL, 'link = "serial:"'), None),
    "a boolean for a number": (SMALL.replace("rating_w = 600.0", "rating_w = true", 1),
                               "field 'rating_w': expected a number"),
    "devices and no converter": (SMALL + '\n[[segment]]\nid = "Z"\n[[device]]\nid = "lone"\n'
                                 'segment = "Z"\npriority = 1\np_min_w = 1\np_max_w = 10\n',
                                 "has no converter and no branch to one"),
}


@pytest.mark.parametrize("name", sorted(RACK_CASES))
def test_bad_rack_files(tmp_path: Path, name: str) -> None:
    text, needle = RACK_CASES[name]
    p = tmp_path / "rack.toml"
    p.write_text(text)
    r = run(str(p), "--emulate", "--duration", "1")
    refused(r, str(p), *([needle] if needle else []))


def test_a_duplicate_branch_id(tmp_path: Path) -> None:
    start = SMALL.index("[[branch]]")
    end = SMALL.index("[[branch]]", start + 1)
    p = tmp_path / "rack.toml"
    p.write_text(SMALL + "\n" + SMALL[start:end])
    refused(run(str(p), "--emulate"), "field 'id': expected a branch id not used before")


TOKEN_CASES = {
    "[token] table": ('[token]\nname = "a"\nrole = "read"\nsha256 = "' + DIGEST + '"\n',
                      "token: expected an array of tables"),
    "token = [\"x\"]": ('token = ["x"]\n', "[[token]] #1: expected a table"),
    "duplicate names": ('[[token]]\nname = "a"\nrole = "read"\nsha256 = "' + DIGEST + '"\n'
                        '[[token]]\nname = "a"\nrole = "operator"\nsha256 = "' + OTHER + '"\n',
                        "'a' is already [[token]] #1"),
    "one digest, two roles": ('[[token]]\nname = "a"\nrole = "read"\nsha256 = "' + DIGEST + '"\n'
                              '[[token]]\nname = "b"\nrole = "operator"\nsha256 = "' + DIGEST
                              + '"\n', "the same secret as [[token]] #1"),
    "plaintext secret": ('[[token]]\nname = "a"\nrole = "read"\nsecret = "hunter2"\n',
                         "field 'secret': the secret itself is never stored"),
    "the empty secret": ('[[token]]\nname = "a"\nrole = "read"\nsha256 = "'
                         + hashlib.sha256(b"").hexdigest() + '"\n', "SHA-256 of an empty secret"),
    "unknown field": ('[[token]]\nname = "a"\nrole = "read"\nsha256 = "' + DIGEST
                      + '"\nadmin = true\n', "unknown field 'admin'"),
}


@pytest.mark.parametrize("name", sorted(TOKEN_CASES))
def test_bad_tokens_files(tmp_path: Path, name: str) -> None:
    text, needle = TOKEN_CASES[name]
    p = tmp_path / "tokens.toml"
    p.write_text(text)
    rack = tmp_path / "rack.toml"
    rack.write_text(SMALL)
    refused(run(str(rack), "--tokens", str(p)), str(p), needle)


FAULT_CASES = {
    "fault = [1]": ("fault = [1]\n", "[[fault]] #1: expected a table"),
    "[fault] table": ('[fault]\nat_s = 1\nkind = "node-reboot"\nnode = 1\n',
                      "fault: expected an array of tables"),
    "node 99": ('[[fault]]\nat_s = 1\nkind = "node-reboot"\nnode = 99\n', "field 'node'"),
    "no node": ('[[fault]]\nat_s = 1\nkind = "converter-failure"\n',
                "converter-failure needs a node of the rack"),
    "a boolean time": ('[[fault]]\nat_s = true\nkind = "ambient"\ncelsius = 30\n',
                       "field 'at_s'"),
    "unknown kind": ('[[fault]]\nat_s = 1\nkind = "meteor"\n', "field 'kind'"),
}


@pytest.mark.parametrize("name", sorted(FAULT_CASES))
def test_bad_fault_scripts(tmp_path: Path, name: str) -> None:
    text, needle = FAULT_CASES[name]
    p = tmp_path / "faults.toml"
    p.write_text(text)
    rack = tmp_path / "rack.toml"
    rack.write_text(SMALL)
    refused(run(str(rack), "--emulate", "--faults", str(p)), str(p), needle)


JOBS_OK = "[[job]]\nkind = 'training'\ndevices = ['gpu0', 'gpu1']\n"
JOB_CASES = {
    "no jobs": ('[scenario]\nrack = "rack.toml"\nduration_s = 60\n', "no [[job]] tables"),
    "an unknown device": ('[scenario]\nrack = "rack.toml"\nduration_s = 60\n'
                          + JOBS_OK.replace("gpu1", "gpu9"), "no device 'gpu9' in the rack"),
    "a parameter out of range": ('[scenario]\nrack = "rack.toml"\nduration_s = 60\n' + JOBS_OK
                                 + "iteration_s = 0\n", "iteration_s"),
    "another rack's devices": ('[scenario]\nrack = "' + str(ROOT / "examples" / "racks"
                                                          / "large.toml")
                               + '"\nduration_s = 60\n' + JOBS_OK.replace(
                                   "'gpu0', 'gpu1'", "'dev000'"),
                               "its jobs are for rack 'large'"),
}


@pytest.mark.parametrize("name", sorted(JOB_CASES))
def test_bad_job_files(tmp_path: Path, name: str) -> None:
    """`run --emulate --jobs FILE` refuses a scenario file whose jobs cannot drive this
    rack, before anything starts; without --emulate, --jobs is refused."""
    text, needle = JOB_CASES[name]
    p = tmp_path / "jobs.toml"
    p.write_text(text)
    rack = tmp_path / "rack.toml"
    rack.write_text(SMALL)
    refused(run(str(rack), "--emulate", "--jobs", str(p)), str(p), needle)
    if name == "no jobs":
        refused(run(str(rack), "--jobs", str(p)), "--jobs needs --emulate")

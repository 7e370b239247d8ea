"""PowerFlow pause hints from a training loop: its checkpoints and evaluation pauses.

A synchronous training job's GPUs drop together when it saves a checkpoint or evaluates, and
come back together when it resumes. The training loop knows both before the rack sees them.
Told, the host gives the room of the pause to lower classes and takes it back a period before
the return, instead of guessing how long the pause lasts (README, "Job hints"):

    from pause_hints import PauseHints

    hints = PauseHints()                      # job slurm-$SLURM_JOB_ID, as the prolog hinted
    ...
    with hints.pause("checkpoint", watts=110):
        save_checkpoint()
    with hints.pause("eval", watts=200):
        evaluate()

Each pause is announced as it begins, for as long as the last pause of its kind took (the
hook times them; the first is announced for `first_s`). It runs `powerflow hint pause JOB
--watts W --for D`, with the host, token and CA from POWERFLOW_HOST, POWERFLOW_TOKEN (an
operator token) and POWERFLOW_CACERT, as for the CLI. The job must have been hinted at its
start (the Slurm prolog, the Kubernetes hook). Hints are advisory: a refused or failed hint
is logged to stderr and training goes on; the host follows a pause only while the GPUs'
measured power agrees with it. Standard library only.

From a shell (what the tests run): python pause_hints.py JOB --watts W --for SECONDS
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

FIRST_S = 20.0  # s a pause of a kind not yet timed is announced for


def send_hint(job: str, watts: float, seconds: float) -> bool:
    """`powerflow hint pause`; False (and why, on stderr) if the hint was not taken."""
    try:
        r = subprocess.run(["powerflow", "hint", "pause", job, "--watts", f"{watts:g}",
                            "--for", f"{seconds:.1f}"], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"pause hint for {job}: not sent: {e}", file=sys.stderr)
        return False
    if r.returncode != 0:
        print(f"pause hint for {job}: {r.stderr.strip()}", file=sys.stderr)
    return r.returncode == 0


class PauseHints:
    """Announces a job's pauses; `send` and `clock` are the CLI and time.monotonic unless a
    test gives its own."""

    def __init__(self, job: str | None = None, first_s: float = FIRST_S,
                 send: Callable[[str, float, float], bool] = send_hint,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job = job or f"slurm-{os.environ.get('SLURM_JOB_ID', 'unknown')}"
        self.first_s = first_s
        self.send, self.clock = send, clock
        self.took: dict[str, float] = {}  # kind -> s the last pause of that kind took

    @contextlib.contextmanager
    def pause(self, kind: str, watts: float) -> Iterator[None]:
        """Around a checkpoint or an evaluation: announces it, then times it."""
        self.send(self.job, watts, self.took.get(kind, self.first_s))
        t0 = self.clock()
        try:
            yield
        finally:
            self.took[kind] = max(self.clock() - t0, 1.0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="announce one pause of a hinted job")
    ap.add_argument("job")
    ap.add_argument("--watts", type=float, required=True)
    ap.add_argument("--for", dest="seconds", type=float, required=True)
    a = ap.parse_args()
    sys.exit(0 if send_hint(a.job, a.watts, a.seconds) else 1)

"""Several independent runs of a scenario at once, one process each.

A scenario's runs (controlled and its two baselines; the arms of `run_arms`; the seeds of a
bench) share nothing: each builds its own rack, physics, controller and random streams
from the scenario's seed. So they run in processes of their own, as many at once as the CPUs
this process may use, and return the same results as one after another (tested:
tests/control/test_scenario_pool.py). Progress from every run reaches the caller's
`progress` in this process, through a queue the runs write to.

Processes are started with `spawn` (not `fork`): the caller may hold threads (an API
server, a test harness), and a forked child would inherit their locks mid-use.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from powerflow.scenario.runner import Progress, RunResult
    from powerflow.scenario.spec import Scenario

PROGRESS_EVERY = 10  # a run reports progress every this many periods (and at its end)


@dataclass(frozen=True)
class RunSpec:
    """One run: the scenario, its mode (controlled, even, droop), the controlled run's arm
    (predictive, reactive, oracle, hinted), the name progress shows, and whether the
    forecaster is shown demand rather than served power (a diagnostic)."""

    sc: Scenario
    mode: str = "controlled"
    arm: str = "predictive"
    label: str = ""
    observe_demand: bool = False


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def run_one(spec: RunSpec, progress: Progress | None = None) -> RunResult:
    """The run `spec` describes, in this process."""
    from powerflow.scenario.runner import ScenarioRun

    r = ScenarioRun(spec.sc, spec.mode, spec.arm)
    r.observe_demand = spec.observe_demand
    r.mode = spec.label or spec.mode  # progress names the run by its label
    res = r.run(progress)
    res.mode = spec.mode
    return res


_queue: Any = None  # in a worker: where its runs' progress goes


def _init_worker(q: Any) -> None:
    global _queue
    _queue = q
    # an interrupt (Ctrl-C reaches the whole process group) is the caller's to handle: it
    # terminates the workers; each would otherwise print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _report(label: str, done: int, total: int) -> None:
    if _queue is not None and (done % PROGRESS_EVERY == 0 or done == total):
        _queue.put((label, done, total))


def _run_in_worker(spec: RunSpec) -> RunResult:
    return run_one(spec, _report)


def run_all(specs: Sequence[RunSpec], progress: Progress | None = None,
            workers: int | None = None) -> list[RunResult]:
    """Every run of `specs`, in their order; at most `workers` at once, each in a process
    of its own; with one run or one worker, in this process. By default as many at once as
    there are runs, up to twice the CPUs this process may use: the runs are of unequal
    length, and with no more processes than CPUs a core idles while the last one ends
    (mixed-day's three runs on two CPUs: 89 s with two at once, 66 s with three). An
    exception in any run (or an interrupt here) is raised here as soon as it happens, the
    other runs' processes terminated."""
    n = min(len(specs), workers if workers is not None else 2 * usable_cpus())
    if n <= 1:
        return [run_one(s, progress) for s in specs]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()

    def pump() -> None:
        while progress is not None:
            try:
                label, done, total = q.get_nowait()
            except queue.Empty:
                return
            progress(label, done, total)

    pool = ctx.Pool(n, initializer=_init_worker, initargs=(q,))
    try:
        jobs = [pool.apply_async(_run_in_worker, (s,)) for s in specs]
        pending = jobs
        while pending:
            pending[0].wait(0.2)
            pump()
            for job in pending:
                if job.ready() and not job.successful():
                    job.get()  # raises the run's exception, whichever run it was
            pending = [job for job in pending if not job.ready()]
        results = [job.get() for job in jobs]
        pool.close()
        pool.join()  # the workers' queue feeders flushed: every progress report is in
    finally:
        pool.terminate()
    pump()
    q.close()
    return results

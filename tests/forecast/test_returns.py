"""Returns from pauses, learnt (forecast/returns.py): a periodic device's second checkpoint is
expected back after the first one's length; nothing is learnt from all-reduce dips or from a
device without a period, and nothing is ever lowered."""

from __future__ import annotations

import numpy as np

from powerflow.forecast.returns import JITTER, MATCH, ROOM_AHEAD, ReturnMemory
from powerflow.forecast.runs import PAUSE_MIN

BUSY, DIP, CKPT = 289.0, 157.0, 113.0


def _trace(n: int, pauses: list[tuple[int, int]]) -> np.ndarray:
    """A training GPU's period means: 7-period steps with a 2-period all-reduce dip, and
    checkpoints (start, length) at CKPT."""
    y = np.where(np.arange(n) % 7 >= 5, DIP, BUSY)
    for a, n_ in pauses:
        y[a:a + n_] = CKPT
    return y


def _run(y: np.ndarray, lag: int) -> tuple[list[float], list[float]]:
    """Feed the memory a forecaster that says persistence with a 20-W band; the mean and
    bound it returns for the next period."""
    mem = ReturnMemory(1)
    m1, u1 = [], []
    for v in y:
        means = {1: np.array([v]), 10: np.array([v])}
        uppers = {1: np.array([v + 20.0]), 10: np.array([v + 20.0])}
        m, u = mem.step(np.array([v]), np.array([lag]), means, uppers)
        assert m[1][0] >= v and u[1][0] >= v + 20.0  # never lowered
        m1.append(float(m[1][0]))
        u1.append(float(u[1][0]))
    return m1, u1


def _held(back: int, y: np.ndarray, lag: int) -> list[int]:
    """The periods whose next-period bound the hold after a return at `back` raises: those
    within a step period of it whose next period is a dip (the rest are busy already)."""
    return [k for k in range(back, back + lag) if y[k] < BUSY - 20.0 - 1e-9]


def test_the_second_pause_of_a_kind_is_expected_back_after_the_first_ones_length() -> None:
    y = _trace(400, [(100, 15), (302, 15)])
    m, u = _run(y, lag=7)
    raised = [k for k in range(len(y)) if u[k] > y[k] + 20.0 + 1e-9]
    # the first checkpoint comes back unforeseen; in the second, the forecasts for the
    # periods within JITTER of the return are raised to the busy level (mean and bound);
    # after each return, the bound is held at the busy level for a step period (the
    # seasonal model's lags fall in the pause), and nothing else is raised
    window = list(range(302 + 15 - 1 - JITTER, 302 + 15 - 1 + 1))
    assert raised == _held(115, y, 7) + window + _held(317, y, 7)
    assert _held(115, y, 7) and _held(317, y, 7)  # the hold shows: dips in its step
    assert all(u[k] == BUSY and m[k] == BUSY for k in window)
    assert all(u[k] == BUSY and m[k] == y[k] for k in raised if k not in window)
    # a pause a period longer than the one remembered: still raised up to its return
    y = _trace(400, [(100, 15), (302, 16)])
    _, u = _run(y, lag=7)
    raised = [k for k in range(len(y)) if u[k] > y[k] + 20.0 + 1e-9]
    assert raised == _held(115, y, 7) + list(range(302 + 15 - 1 - JITTER, 302 + 16)) + _held(
        318, y, 7)


def test_dips_and_devices_without_a_period_teach_nothing() -> None:
    y = _trace(400, [(100, 15), (302, 15)])
    _, u = _run(y, lag=0)  # no period: a burst's end, a batch job's
    assert u == [v + 20.0 for v in y]
    _, u = _run(_trace(400, []), lag=7)  # steps with their dips only
    assert u == [v + 20.0 for v in _trace(400, [])]


def test_a_pause_of_another_kind_is_not_taken_for_a_known_one() -> None:
    y = _trace(400, [(100, 15)])
    y[300:325] = 201.0  # an evaluation pause: another level
    _, u = _run(y, lag=7)
    raised = [k for k in range(len(y)) if u[k] > y[k] + 20.0 + 1e-9]
    assert raised == _held(115, y, 7) + _held(325, y, 7)  # only the holds after returns


def test_a_device_that_does_not_step_teaches_nothing_even_with_a_period_found() -> None:
    y = np.full(400, BUSY)  # a batch job: flat while it runs, idle in its gaps
    y[100:115] = CKPT
    y[302:317] = CKPT
    _, u = _run(y, lag=7)
    assert u == [v + 20.0 for v in y]


def _rooms(y: np.ndarray, lag: int, free: np.ndarray | None = None) -> list[float]:
    """The room the memory gives the device after each period (NaN: none, its ceiling)."""
    mem = ReturnMemory(1)
    out = []
    for k, v in enumerate(y):
        means = {1: np.array([v]), 10: np.array([v])}
        uppers = {1: np.array([v + 20.0]), 10: np.array([v + 20.0])}
        mem.step(np.array([v]), np.array([lag]), means, uppers,
                 None if free is None else free[k:k + 1])
        out.append(float(mem.room[0]))
    return out


def test_a_known_pause_gives_room_until_just_before_its_return() -> None:
    y = _trace(400, [(100, 15), (302, 15)])
    room = _rooms(y, lag=7)
    given = [k for k in range(len(y)) if not np.isnan(room[k])]
    # none in the first checkpoint (its length unknown); in the second, from the period it
    # is known for a pause (PAUSE_MIN low ones) to ROOM_AHEAD periods before the return
    back = 302 + 15
    assert given == list(range(302 + PAUSE_MIN - 1, back - ROOM_AHEAD))
    assert all(room[k] == CKPT + MATCH * BUSY for k in given)  # what it draws, and a margin
    # a capped device's power is its cap's: it says nothing of a pause, so no room
    free = np.ones(len(y), bool)
    free[300:330] = False
    assert all(np.isnan(r) for r in _rooms(y, lag=7, free=free))
    # no period, or a pause of another kind: none
    assert all(np.isnan(r) for r in _rooms(y, lag=0))
    y2 = _trace(400, [(100, 15)])
    y2[300:325] = 201.0
    assert all(np.isnan(r) for r in _rooms(y2, lag=7))

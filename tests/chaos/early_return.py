"""What the chaos tests of room (a pause hint's, a learnt pause's) check once the paused
devices come back early while the CPU is starved: the room goes within a few periods of the
measured return, the devices it was kept for are never capped by it, the bus stays in band,
and the feed's draw over its limit is brief and bounded by the room given out. The physics
log is the truth; every wait is bounded."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from powerflow.testing.chaos import LogLine, RunningHost, wait_for

WITHDRAWN_WITHIN = 3  # host periods from the measured return
STARVED_PAST_RETURN_S = 6.0  # the disturbance lasts this long past the return


def await_return_and_withdrawal(h: RunningHost, since: float, devices: Sequence[str],
                                returned: Callable[[LogLine], bool]) -> float:
    """Run inside the starvation: wait for the physics log to show the return (`returned`,
    after Unix time `since`), then for the room of every one of `devices` to be withdrawn;
    keep the starvation going STARVED_PAST_RETURN_S past the return. Asserts the room went
    within WITHDRAWN_WITHIN periods; returns when the devices came back (Unix time, s)."""
    back = wait_for(lambda: next((ln.t for ln in h.physics(since) if returned(ln)), None),
                    40, "the devices back from their pause (physics log)")
    periods_at_back = h.api("/control")["periods"]

    def withdrawn() -> int | None:
        d = h.api("/allocation")["devices"]
        if all(d[x]["room_w"] is None for x in devices):
            return int(h.api("/control")["periods"])
        return None

    done_at = wait_for(withdrawn, 20, "the room withdrawn after the early return")
    time.sleep(max(0.0, back + STARVED_PAST_RETURN_S - time.time()))  # the disturbance
    assert done_at - periods_at_back <= WITHDRAWN_WITHIN, (periods_at_back, done_at)
    return float(back)


def check_the_rack_after(h: RunningHost, back: float, kept_for: Sequence[int],
                         breaker_w: float, given_w: float, bus_v: float = 12.0) -> None:
    """Around the return (2 s before to STARVED_PAST_RETURN_S after): the devices at indices
    `kept_for` never capped under their demand (room is never a cap), the bus in band, the
    feed over `breaker_w` for at most 2 s and by less than `given_w` (W of room handed to
    lower classes), and no safe mode."""
    lines = h.physics(back - 2.0, back + STARVED_PAST_RETURN_S)
    assert lines
    worst = min(ln.cap[i] - ln.demand[i] for ln in lines for i in kept_for)
    assert worst > -0.5, worst
    assert min(ln.vmin for ln in lines) >= 0.95 * bus_v, min(ln.vmin for ln in lines)
    over = [ln for ln in lines if ln.feed > breaker_w]
    # log lines are 0.1 s apart: at most 2 s over the limit
    assert len(over) <= 20, [(round(ln.t - back, 1), ln.feed) for ln in over]
    assert max((ln.feed for ln in over), default=0.0) < breaker_w + given_w, over
    assert all(a["kind"] != "safe_mode" for a in h.api("/alarms"))

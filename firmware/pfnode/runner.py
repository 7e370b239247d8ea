"""The node's main loop on a board or in emulation (a plain superloop, no asyncio).

Per pass: run the control step when its period is due, wait for link bytes
until the next step is due, feed them to the framer, send what is due, and feed
the watchdog if both the control and the comms path ran. The control step is
allocation-free, so a board may move it into a hard timer interrupt; the
superloop is kept as the default because it is the same on every board and in
emulation.
"""

from pfnode.clock import ticks_add, ticks_diff

_MAX_BEHIND = 10  # periods; beyond this the schedule is reset instead of caught up


class Runner:
    def __init__(self, node, link, wdt_timeout_ms=1000):
        self.node = node
        self.link = link
        node.link = link
        self.period = node.cfg.control_period_ms
        self.steps = 0
        node.hal.wdt_start(wdt_timeout_ms)

    def run(self, duration_ms=-1):
        node = self.node
        hal = node.hal
        link = self.link
        fr = node.framer
        on_block = node.on_block
        background = getattr(hal, "background", None)
        start = hal.ticks_ms()
        next_step = start
        while duration_ms < 0 or ticks_diff(hal.ticks_ms(), start) < duration_ms:
            now = hal.ticks_ms()
            late = ticks_diff(now, next_step)
            if late >= 0:
                if background is not None:
                    background()
                node.step()
                self.steps += 1
                next_step = ticks_add(next_step, self.period)
                if late > _MAX_BEHIND * self.period:
                    next_step = ticks_add(now, self.period)
            wait = ticks_diff(next_step, hal.ticks_ms())
            if link.wait(wait if wait > 0 else 0):
                n = link.read()
                if n:
                    fr.feed(link.buf, n, on_block)
            node.service()
            node.feed_watchdog()

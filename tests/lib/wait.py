"""Waiting on a condition with a deadline, never a bare sleep."""
import time


def wait_for(cond, deadline=10.0, interval=0.01, what="condition"):
    """Poll cond() until it returns a truthy value (returned) or the deadline
    (seconds) passes (AssertionError naming `what`)."""
    end = time.monotonic() + deadline
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)

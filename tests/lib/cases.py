"""The case runner of every Python test: each case runs on its own (a failing
case is reported with its traceback and the next one runs), one line per
case, and finish() prints `N passed, N failed` and exits non-zero when any
failed.

    @case
    def vm_is_created(): ...
    finish()
"""
import sys
import time
import traceback

_results = {"passed": 0, "failed": 0}


def run_case(name, fn):
    """Run fn() as the case `name`; True when it passed."""
    t0 = time.monotonic()
    try:
        fn()
    except Exception:
        _results["failed"] += 1
        print("FAIL %s" % name, flush=True)
        traceback.print_exc()
        return False
    _results["passed"] += 1
    print("ok   %-50s %.2fs" % (name, time.monotonic() - t0), flush=True)
    return True


def case(fn):
    """Decorator: run fn now as the case named after it; fn is returned."""
    run_case(fn.__name__, fn)
    return fn


def failed():
    return _results["failed"]


def finish():
    print("%d passed, %d failed" % (_results["passed"], _results["failed"]), flush=True)
    sys.exit(1 if _results["failed"] else 0)

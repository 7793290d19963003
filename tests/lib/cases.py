"""The case runner of every Python test: each case runs on its own (a failing
case is reported with its traceback and the next one runs), one line per
case, and finish() prints `N passed, N failed` and exits non-zero when any
failed.

    @case
    def vm_is_created(): ...
    finish()
"""
import atexit
import os
import re
import shutil
import sys
import time
import traceback

_results = {"passed": 0, "failed": 0}
_scratch = []           # directories to remove at exit after a clean run
_clean = {"ok": False}  # finish() reached with no case failed, no exception after


def scratch(path):
    """path (a temporary directory: a daemon's configuration, database and
    log) is removed when the test exits after every case passed; kept when
    any failed, for its logs (PROXD_KEEP_TMP=1 keeps it always)."""
    _scratch.append(path)
    return path


def _remove_scratch():
    if _clean["ok"] and not os.environ.get("PROXD_KEEP_TMP"):
        for p in _scratch:
            shutil.rmtree(p, ignore_errors=True)


_excepthook = sys.excepthook


def _uncaught(*exc):
    # an exception after finish() (a daemon's stop found a sanitizer report)
    _clean["ok"] = False
    _excepthook(*exc)


sys.excepthook = _uncaught
atexit.register(_remove_scratch)


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
    """Decorator: run fn now as the case named after it; fn is returned.
    PROXD_CASES=regex runs only the cases whose name it matches (by hand,
    while working on one: a case may need what earlier ones made)."""
    only = os.environ.get("PROXD_CASES")
    if not only or re.search(only, fn.__name__):
        run_case(fn.__name__, fn)
    return fn


def failed():
    return _results["failed"]


def finish():
    print("%d passed, %d failed" % (_results["passed"], _results["failed"]), flush=True)
    _clean["ok"] = not _results["failed"]
    sys.exit(1 if _results["failed"] else 0)

"""test_drain on PostgreSQL (a private server, tests/lib/pg.py): the same
cases, the cordon kept in PostgreSQL and seen by a second proxd on it. In
`make test-full` only (PROXD_TEST_FULL=1, ~33 s: the suite passed 15
minutes in CI); store/test_store's test_kv_change_logged and
test_kv_change_cancel run the cordon's store calls (an uncordon's drain
cancel included) on PostgreSQL in `make test`."""
import os
import sys

from lib.pg import full_run, rerun_script

if not full_run():
    print("the PostgreSQL run of test_drain is in make test-full only")
    sys.exit(0)
rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_drain.py"), 1)

"""test_cancel on PostgreSQL (a private server, tests/lib/pg.py): the same
cases, the cancel recorded in PostgreSQL and read by the instance running
the job, the queued job's end and what it gives back in one PostgreSQL
transaction, racing claims that lock the row. In `make test-full` only
(PROXD_TEST_FULL=1, ~75 s): store/test_store's test_job_cancel runs the
cancel's store calls, row lock included, on PostgreSQL in `make test`."""
import os
import sys

from lib.pg import full_run, rerun_script

if not full_run():
    print("the PostgreSQL run of test_cancel is in make test-full only")
    sys.exit(0)
rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_cancel.py"), 1)

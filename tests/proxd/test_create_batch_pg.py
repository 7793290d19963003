"""test_create_batch on PostgreSQL (a private server, tests/lib/pg.py): the
same cases, `proxd create --from` checking idempotency keys, taking VM IDs
and queueing its jobs in PostgreSQL. In `make test-full` only
(PROXD_TEST_FULL=1): its store calls are a single creation's
(api/test_pg, core/test_core_pg run them on PostgreSQL in `make test`)."""
import os
import sys

from lib.pg import full_run, rerun_script

if not full_run():
    print("the PostgreSQL run of test_create_batch is in make test-full only")
    sys.exit(0)
rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_create_batch.py"), 1)

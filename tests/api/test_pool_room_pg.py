"""test_pool_room on PostgreSQL (a private server, tests/lib/pg.py): a
creation's cloud-init drive and a resize's growth reserved in the shared
pool under PostgreSQL's locks (node, then pool). In `make test-full` only
(PROXD_TEST_FULL=1): the store calls involved are store/test_store's on
PostgreSQL already, and test_drain_disks_pg runs these reservations there
in `make test`."""
import os
import sys

from lib.pg import full_run, rerun_script

if not full_run():
    print("the PostgreSQL run of test_pool_room is in make test-full only")
    sys.exit(0)
rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_pool_room.py"), 1)

"""test_reinstall_move on PostgreSQL (a private server, tests/lib/pg.py):
the reinstall onto another node, its faults and kills, with the job's
state, the record's change and its events, the VMID, address and capacity
reservations in PostgreSQL. In `make test-full` only (PROXD_TEST_FULL=1):
`make test` is near its time limit, and the store calls involved are
store/test_store's on PostgreSQL already."""
import os
import sys

from lib.pg import full_run, rerun_script

if not full_run():
    print("the PostgreSQL run of test_reinstall_move is in make test-full only")
    sys.exit(0)
rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_reinstall_move.py"), 1)

"""test_control_faults (control jobs under placed faults, their record writes
conditional on what was read) again with the core's database on a private
PostgreSQL server, each test case in a fresh schema, and test_control (power
matrix, updates and resizes on PVE 7/8/9, refusals, moves, the reconciler):
in the full run only (`make test-full`, PROXD_TEST_FULL=1; the suite on
SQLite passed 15 minutes in CI). Their conditional record writes are
store/test_store's test_vm_update_if on PostgreSQL in `make test`."""
import sys

from lib.pg import full_run, run_c_tests

if not full_run():
    print("the PostgreSQL run of test_control(_faults) is in make test-full only")
    sys.exit(0)
run_c_tests(["core_test_control_faults", "core_test_control"])

"""test_control_faults (control jobs under placed faults, their record writes
conditional on what was read) again with the core's database on a private
PostgreSQL server, each test case in a fresh schema; test_control (power
matrix, updates and resizes on PVE 7/8/9, refusals, moves, the reconciler)
too in the full run (`make test-full`, PROXD_TEST_FULL=1)."""
from lib.pg import full_run, run_c_tests

run_c_tests(["core_test_control_faults"] + (["core_test_control"] if full_run() else []))

"""test_control (power matrix, shutdown timeouts, deletion, updates and
resizes on PVE 7/8/9, refusals, moves, drift and the reconciler) and
test_control_faults (control jobs under placed faults) again with the core's
database on a private PostgreSQL server, each test case in a fresh schema."""
from lib.pg import run_c_tests

run_c_tests(["core_test_control", "core_test_control_faults"])

"""The in-process core tests (test_create: every OS, failover from each
failing step, all nodes failing, VMID collisions, bad input;
test_concurrency: 200 creations at once; test_control: power matrix,
shutdown timeouts, deletion, updates and resizes on PVE 7/8/9, refusals,
moves, drift and the reconciler; test_control_faults: control jobs under
placed faults; test_netwalk: the config walk, foreign addresses, drift
restore and adopt, the agent's confirmation) run again with the core's database on a
private PostgreSQL server, each test case in a fresh schema."""
from lib.pg import run_c_tests

run_c_tests(["core_test_create", "core_test_concurrency", "core_test_control",
             "core_test_control_faults", "core_test_netwalk"])

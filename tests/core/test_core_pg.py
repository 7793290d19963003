"""The in-process creation tests (test_create: every OS, failover from each
failing step, all nodes failing, VMID collisions, bad input;
test_concurrency: 200 creations at once) run again with the core's database
on a private PostgreSQL server, each test case in a fresh schema. The
control and config-walk tests have files of their own (test_control_pg,
test_netwalk_pg), so that each part stays well inside the suite's per-test
time limit and the parts can run side by side."""
from lib.pg import run_c_tests

run_c_tests(["core_test_create", "core_test_concurrency"])

"""The in-process creation tests again with the core's database on a private
PostgreSQL server, each test case in a fresh schema: test_concurrency (200
creations at once: VMID reservation, capacity and clone slots under the
server's own locking) always; test_create (every OS, failover from each
failing step, bad input: the same store calls, one at a time, that
store/test_store runs on PostgreSQL) only in the full run (`make test-full`,
PROXD_TEST_FULL=1), which keeps `make test` inside its time budget. The
control and config-walk tests have files of their own (test_control_pg,
test_netwalk_pg)."""
from lib.pg import full_run, run_c_tests

run_c_tests(["core_test_concurrency"] + (["core_test_create"] if full_run() else []))

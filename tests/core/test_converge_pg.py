"""test_converge (in the full run: cleanup under faults, leftovers, half-made VMs, a node's
death) again with the core's database on a private PostgreSQL server, each
test case in a fresh schema: the leftovers table and the reconciler's use of
it must hold on both backends; then test_keeper and test_delete_race. Apart
from test_core_pg so that each stays well inside the suite's per-test time
limit."""
from lib.pg import full_run, run_c_tests

# test_keeper: removals beside the keeper, leftovers of unconfigured nodes
# (their first sighting kept in the database), the probe; test_delete_race:
# a DELETE (of this core, or of another instance) between a job's read and
# its conditional write. Each with its own time limit (seconds).
# test_converge itself (cleanup under faults, half-made VMs; its store
# calls are store/test_store's) in the full run only (`make test-full`).
# test_keeper on PostgreSQL in the full run only too (the suite passed 15
# minutes in CI).
run_c_tests(([("core_test_converge", 200), ("core_test_keeper", 120)] if full_run() else []) +
            [("core_test_delete_race", 60)])

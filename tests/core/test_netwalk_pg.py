"""test_netwalk (the config walk, foreign addresses, conflicts, drift report,
restore and adopt, the guest agent's confirmation) again with the core's
database on a private PostgreSQL server, in the full run only (`make
test-full`, PROXD_TEST_FULL=1): its store operations are tested on
PostgreSQL by store/test_store in every run."""
from lib.cases import finish
from lib.pg import full_run, run_c_tests

if full_run():
    run_c_tests(["core_test_netwalk"])
print("test_netwalk on PostgreSQL: in the full run only (make test-full)")
finish()

"""test_netwalk (the config walk, foreign addresses, conflicts, drift report,
restore and adopt, the guest agent's confirmation) again with the core's
database on a private PostgreSQL server, each test case in a fresh schema."""
from lib.pg import run_c_tests

run_c_tests(["core_test_netwalk"])

"""test_converge (cleanup under faults, leftovers, half-made VMs, a node's
death) again with the core's database on a private PostgreSQL server, each
test case in a fresh schema: the leftovers table and the reconciler's use of
it must hold on both backends; then test_keeper and test_delete_race. Apart from test_core_pg so that each stays
well inside the suite's per-test time limit."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
from pglib import PrivatePG  # noqa: E402

TESTS_DIR = os.environ["TESTS_DIR"]
pg = PrivatePG()
try:
    env = dict(os.environ, PROXD_TEST_PG=pg.url)
    failed = 0
    # test_keeper: removals beside the keeper, leftovers of unconfigured
    # nodes (their first sighting kept in the database), the probe;
    # test_delete_race: the record lock against a DELETE
    for name, limit in (("core_test_converge", 200), ("core_test_keeper", 120),
                        ("core_test_delete_race", 60)):
        r = subprocess.run([os.path.join(TESTS_DIR, name)], env=env, timeout=limit)
        print("%s on PostgreSQL: exit %d" % (name, r.returncode), flush=True)
        failed += r.returncode != 0
finally:
    pg.stop()
sys.exit(1 if failed else 0)

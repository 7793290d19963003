"""test_drain on PostgreSQL (a private server, tests/lib/pg.py): the same
cases, the cordon kept in PostgreSQL and seen by a second proxd on it."""
import os
import subprocess
import sys

from lib.pg import PrivatePG

pg = PrivatePG()
try:
    env = dict(os.environ, PROXD_TEST_DB=pg.url)
    rc = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "test_drain.py")], env=env).returncode
finally:
    pg.stop()
sys.exit(rc)

"""The crash test (test_crash.py) with proxd's database on PostgreSQL: a
private server (tests/api/pglib.py), proxd killed with SIGKILL at random
moments during 50 creations and restarted, ten times; afterwards every
request has exactly one VM or a failure, and the database and Proxmox agree."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
sys.path.insert(0, HERE)
from pglib import PrivatePG  # noqa: E402
import test_crash  # noqa: E402

pg = PrivatePG()
try:
    test_crash.main(pg.url)
finally:
    pg.stop()

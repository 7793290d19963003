"""The crash test (test_crash.py) with proxd's database on PostgreSQL: a
private server (tests/lib/pg.py), proxd killed with SIGKILL at random
moments during 50 creations and restarted, ten times; afterwards every
request has exactly one VM or a failure, and the database and Proxmox agree."""
import test_crash  # the script's own directory is on sys.path

from lib.pg import PrivatePG

pg = PrivatePG()
try:
    test_crash.main(pg.url)
finally:
    pg.stop()

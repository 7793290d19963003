"""test_shared_storage on PostgreSQL (a private server, tests/lib/pg.py):
the pool's reservations under PostgreSQL's locks (node, then pool)."""
import os

from lib.pg import rerun_script

rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_shared_storage.py"), 1)

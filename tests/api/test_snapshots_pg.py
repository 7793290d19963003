"""test_snapshots on PostgreSQL: three private servers (pglib), one per
part of the test (each part needs a database of its own)."""
import os

from lib.pg import rerun_script

rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_snapshots.py"), 3)

"""test_events on PostgreSQL: three private servers (lib.pg), one for the
main proxd, one for the retention case, one for the two instances sharing a
database (where the commit-ordered ids and the webhook lease matter most)."""
import os

from lib.pg import rerun_script

rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_events.py"), 3)

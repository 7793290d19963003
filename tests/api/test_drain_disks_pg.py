"""test_drain_disks on PostgreSQL (a private server, tests/lib/pg.py): the
migrations' and the reinstall's reservations by the VMs' own disks (a
volume without size= sized by its storage) under PostgreSQL's locks."""
import os

from lib.pg import rerun_script

rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_drain_disks.py"), 1)

"""proxd --check-config FILE (and every command that loads a configuration):
the whole report is printed, however long (proxd cut it at 8 KiB). No sim,
no daemon: the binary on files."""
import os
import subprocess
import tempfile

from lib.cases import case, finish, scratch
from lib.env import PROXD

DIR = scratch(tempfile.mkdtemp(prefix="proxd-check-config-"))
# a valid configuration of 8 lines: the cases append from line 9
BASE = ("[os ubuntu]\nvmid_range = 1000-1999\n[node sv1]\nhost = 10.0.0.1:8006\n"
        "storage = local-lvm\ntemplate.ubuntu = 8000\n[proxmox]\ntoken = root@pam!t=x\n")


def check(text):
    path = os.path.join(DIR, "proxd.conf")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([PROXD, "--check-config", path], capture_output=True, text=True,
                       timeout=60)
    return r, path


@case
def a_long_report_is_printed_whole():
    # 300 unknown keys of 60 characters: 200 messages of ~100 bytes, 20 KiB
    text = BASE + "[proxd]\n" + "".join("k%059d = 1\n" % i for i in range(300))
    r, path = check(text)
    assert r.returncode == 1, (r.returncode, r.stderr[-500:])
    lines = r.stderr.splitlines()
    assert len(r.stderr) > 8192 and len(lines) == 201, (len(r.stderr), len(lines))
    assert lines[0] == "%s:10: [proxd] k%059d: unknown key" % (path, 0), lines[0]
    assert lines[199] == "%s:209: [proxd] k%059d: unknown key" % (path, 199), lines[199]
    assert lines[-1] == "%s: too many errors, stopped here" % path, lines[-1]
    assert r.stderr.endswith("\n")


finish()

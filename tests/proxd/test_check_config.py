"""proxd --check-config FILE (and every command that loads a configuration):
the whole report is printed, however long (proxd cut it at 8 KiB), and no
secret of the file reaches it: a token alone on a line, a webhook URL's
user part, path or query. No sim, no daemon: the binary on files."""
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


@case
def no_secret_of_the_file_reaches_the_report():
    secrets = ["8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50", "UserPartT0ken", "PassW0rdPart",
               "PathS3cret", "QueryS3cret"]
    text = (BASE + secrets[0] + "\n"  # 9: a token pasted alone on a line
            "[webhook w]\n"
            "url = https://%s:%s@hooks.example/services/%s?token=%s x\n"  # 11: a space
            "secret = 0123456789abcdef\n"
            "[webhook v]\n"
            "url = https://%s@hooks.example/ y\n"
            "secret = 0123456789abcdef\n") % (secrets[1], secrets[2], secrets[3], secrets[4],
                                              secrets[1])
    r, path = check(text)
    assert r.returncode == 1, (r.returncode, r.stderr)
    for want in (":9: [proxmox]: expected 'key = value' or '[section]'",
                 ":11: [webhook w] url: 'https://hooks.example...'",
                 ":14: [webhook v] url: 'https://hooks.example...'"):
        assert path + want in r.stderr, (want, r.stderr)
    shown = [s for s in secrets if s in r.stdout + r.stderr]
    assert not shown, (shown, r.stderr)


finish()

"""proxctl end to end: a real proxd in front of a five-node pvesim, driven by
proxctl with its output piped (plain lines) and on a terminal (a pty made by
util-linux's `script`: progress bar). Checks outputs, tables, --json and the
exit codes scripts rely on."""
import http.server
import json
import os
import subprocess
import tempfile
import threading
import time

from lib.cases import case, finish
from lib.db import execute, query
from lib.env import PROXCTL
from lib.proxd import Proxd
from lib.sim import Sim
from lib.wait import wait_for

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFzq7NTAlFT4SImr0qHpVZ0HHVdVunThFP1ICflNG6d+ "
       "me@host")

state = {}


def ctl(*args, token=None, env=None):
    e = dict(os.environ)
    e.pop("PROXCTL_CONFIG", None)
    e["HOME"] = state["home"]
    e["PROXD_URL"] = state["px"].base
    e["PROXD_TOKEN"] = token if token is not None else state["admin"]
    e.update(env or {})
    return subprocess.run([PROXCTL] + list(args), capture_output=True, text=True, timeout=120,
                          env=e)


def on_tty(*args):
    """Run proxctl under a pseudo-terminal; returns (exit code, what the terminal saw)."""
    cmd = " ".join([PROXCTL] + ["'%s'" % a for a in args])
    e = dict(os.environ, HOME=state["home"], PROXD_URL=state["px"].base,
             PROXD_TOKEN=state["admin"])
    r = subprocess.run(["script", "-qefc", cmd, "/dev/null"], capture_output=True, timeout=120,
                       env=e)  # bytes: text mode would turn the bar's \r into newlines
    return r.returncode, r.stdout.decode(errors="replace")


def main():
    with Sim(time_scale=0.01) as sim:
        px = Proxd(sim)
        state["px"] = px
        state["sim"] = sim
        state["home"] = tempfile.mkdtemp(prefix="proxctl-home-")
        state["admin"] = px.token("ops", "admin")
        state["alice"] = px.token("alice", "user")
        keyfile = os.path.join(state["home"], "id.pub")
        with open(keyfile, "w") as f:
            f.write(KEY + "\n")
        state["key"] = keyfile
        px.start()
        try:
            run_cases()
        finally:
            px.stop()


def run_cases():
    @case
    def create_piped_shows_steps_and_result():
        r = ctl("vm", "create", "--os", "ubuntu", "--name", "web-1", "--cores", "2", "--memory",
                "2G", "--disk", "20G", "--ssh-key", state["key"], "--owner", "alice")
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        lines = r.stdout.splitlines()
        steps = [ln.split()[1].rstrip(":") for ln in lines if "%" in ln.split()[0]]
        for s in ("queued", "clone", "wait_clone", "configure", "start", "done"):
            assert s in steps, (s, lines)
        assert "\r" not in r.stdout and "[#" not in r.stdout  # no bar when piped
        assert lines[-1].startswith("VM 1000 (web-1) is running on sv1"), lines[-1]

    @case
    def create_on_a_terminal_draws_a_progress_bar():
        code, out = on_tty("vm", "create", "--os", "debian", "--name", "db-1", "--cores", "1",
                           "--memory", "1024", "--disk", "10")
        assert code == 0, (code, out)
        assert "\r" in out and "[########################] 100%" in out, out[-600:]
        assert "VM 4000 (db-1) is running" in out

    @case
    def list_is_an_aligned_table_and_json():
        r = ctl("vm", "list")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split()[:4] == ["VMID", "NAME", "OS", "OWNER"], lines[0]
        col = lines[0].index("NAME")
        assert all(ln[col - 1] == " " for ln in lines[1:])
        assert any(ln.startswith("1000 ") and "web-1" in ln for ln in lines[1:])
        j = json.loads(ctl("--json", "vm", "list").stdout)
        assert {v["vmid"] for v in j} == {1000, 4000}
        j = json.loads(ctl("--json", "vm", "list", "--owner", "alice").stdout)
        assert [v["vmid"] for v in j] == [1000]

    @case
    def node_list_has_capacity_bars():
        r = ctl("node", "list")
        assert r.returncode == 0, r.stderr
        rows = r.stdout.splitlines()
        assert rows[0].split()[0:2] == ["NODE", "HEALTH"]
        assert len(rows) == 6 and all("[" in x and "]" in x for x in rows[1:]), rows
        assert json.loads(ctl("--json", "node", "list").stdout)["nodes"][0]["name"] == "sv1"

    @case
    def node_list_says_why_a_node_is_down():
        def health(name):
            ns = json.loads(ctl("--json", "node", "list").stdout)["nodes"]
            return [n for n in ns if n["name"] == name][0]["health"]
        sim = state["sim"]
        sim.ctl("POST", "/nodes/sv5", {"state": "offline"})
        try:
            wait_for(lambda: health("sv5") == "down", deadline=30, interval=0.1, what="sv5 down")
            rows = ctl("node", "list").stdout.splitlines()
            at = [i for i, x in enumerate(rows) if x.split()[0:2] == ["sv5", "down"]]
            assert at and rows[at[0] + 1].split()[0] == "why:", rows
            # the cluster's word, or a probe's when one came first (a loaded machine)
            assert ("offline (as the cluster reports it)" in rows[at[0] + 1]
                    or "does not answer a status probe" in rows[at[0] + 1]), rows
            assert len(rows) == 7, rows  # only the down node has a second line
        finally:
            sim.ctl("POST", "/nodes/sv5", {"state": "online"})
            wait_for(lambda: health("sv5") == "up", deadline=30, interval=0.1, what="sv5 up")

    @case
    def status_says_what_needs_attention():
        """proxctl status: nothing to see exits 0; a node down and a job that
        failed are attention lines (exit 1), in the text and in --json; a
        user's token sees its own; a bad --hours is refused naming it."""
        sim = state["sim"]
        r = ctl("status")
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        lines = r.stdout.splitlines()
        assert lines[0] == "proxd at %s: ready" % state["px"].base, lines
        assert lines[-1] == "attention: none", lines
        assert any(x.startswith("nodes:     5 up, 0 down") for x in lines), lines
        # a job that fails: a resize whose tasks fail on Proxmox
        sim.add_faults([{"kind": "task_error", "path": r"/qemu/1000/resize$", "method": "PUT",
                         "message": "disk full"}])
        r = ctl("vm", "resize", "1000", "--disk", "30G")
        sim.clear_faults()
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        sim.ctl("POST", "/nodes/sv5", {"state": "offline"})
        try:
            def down():
                st = json.loads(ctl("--json", "status").stdout)
                return st if st["nodes"]["down"] == 1 else None
            st = wait_for(down, deadline=30, interval=0.1, what="sv5 down in the status")
            assert st["ready"] is True and st["nodes"]["up"] == 4, st
            att = st["attention"]
            assert len(att) == 2, att
            assert att[0].startswith("node sv5 is down: "), att
            assert att[1] == "1 job failed in the last 1 h (proxctl job list --state failed)", att
            f = st["jobs"]["failed"]
            assert len(f) == 1 and f[0]["kind"] == "resize" and "disk full" in f[0]["error"], f
            r = ctl("status")
            assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
            lines = r.stdout.splitlines()
            assert "attention: 2" in lines, lines
            assert any(x.startswith("  - node sv5 is down: ") for x in lines), lines
            assert any(x.strip().startswith("failed ") and "resize VM 1000" in x
                       and "disk full" in x for x in lines), lines
            # alice, a user: the nodes, and the jobs of her VMs (the resize was of hers)
            mine = json.loads(ctl("--json", "status", token=state["alice"]).stdout)
            assert mine["nodes"]["down"] == 1, mine
            assert [j["vmid"] for j in mine["jobs"]["failed"]] == [1000], mine
        finally:
            sim.ctl("POST", "/nodes/sv5", {"state": "online"})
            wait_for(lambda: json.loads(ctl("--json", "status").stdout)["nodes"]["down"] == 0,
                     deadline=30, interval=0.1, what="sv5 up again")
        for bad in (["--hours", "0"], ["--hours", "x"], ["extra"]):
            r = ctl("status", *bad)
            assert r.returncode == 2, (bad, r.returncode, r.stderr)
        assert "--hours" in ctl("status", "--hours", "0").stderr
        assert ctl("status", token="pxd_not_a_token").returncode == 4

    @case
    def list_filters_are_values_and_columns_fit():
        # (after the node cases: its VM's traffic to its node would tell
        # a node's fall before the cluster does)
        # a filter's '&' or '=' is part of its value (it was sent raw: a
        # second parameter); one past the bound is refused, naming it
        for cmd in (("vm", "list"), ("job", "list")):
            r = ctl("--json", *cmd, "--owner", "alice&owner=bob")
            assert r.returncode == 0, (cmd, r.stderr)
            assert json.loads(r.stdout) == [], (cmd, r.stdout)
            r = ctl("--json", *cmd, "--owner", "a" * 3000)
            assert r.returncode == 2 and "--owner: too long" in r.stderr, (cmd, r.returncode,
                                                                         r.stderr)
        # columns as wide as their values: an owner of 25 characters whole
        owner = "customer-0000000000000001"
        r = ctl("vm", "create", "--os", "ubuntu", "--name", "wide-1", "--cores", "1", "--memory",
                "1G", "--disk", "10G", "--owner", owner)
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        try:
            lines = ctl("vm", "list").stdout.splitlines()
            rows = [ln for ln in lines if " wide-1 " in ln]
            assert len(rows) == 1 and (" %s " % owner) in rows[0], lines
            at = lines[0].index("NODE")
            assert all(ln[at - 1] == " " and ln[at] != " " for ln in lines), lines
        finally:
            vmid = [v["vmid"] for v in json.loads(ctl("--json", "vm", "list", "--owner",
                                                      owner).stdout)]
            for v in vmid:
                assert ctl("vm", "delete", str(v)).returncode == 0

    @case
    def lifecycle_and_show():
        for args in (["vm", "pause", "1000"], ["vm", "resume", "1000"],
                     ["vm", "resize", "1000", "--disk", "30G"],
                     ["vm", "set", "1000", "--memory", "4G"]):
            r = ctl(*args)
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        v = json.loads(ctl("--json", "vm", "show", "1000").stdout)
        assert v["disk_gb"] == 30 and v["memory_mb"] == 4096, v
        r = ctl("vm", "show", "1000")
        assert "pending" in r.stdout and "next reboot" in r.stdout, r.stdout
        r = ctl("vm", "shutdown", "1000", "--timeout", "30", "--force")
        assert r.returncode == 0 and "is stopped" in r.stdout, (r.stdout, r.stderr)
        r = ctl("vm", "delete", "1000")
        assert r.returncode == 0, r.stderr

    @case
    def os_list_tells_quarantined_ids_apart():
        # VM 1000 deleted (lifecycle_and_show): with a quarantine its ID is
        # given back quarantined; "os list" counted it as used (1/1000, no
        # ubuntu VM left). This proxd has quarantine = 0: the row a
        # quarantine of an hour leaves is written behind its back.
        px = state["px"]
        assert not query(px.db, "SELECT vmid FROM vmid_alloc WHERE vmid = 1000")
        execute(px.db, "INSERT INTO vmid_alloc (vmid, state, until, updated_at) VALUES "
                "(1000, 'quarantine', %d, %d)" % ((time.time() + 3600) * 1000, time.time() * 1000))
        try:
            rows = ctl("os", "list").stdout.splitlines()
            assert rows[0].split() == ["OS", "RANGE", "USED", "QUARANTINED", "CLONE", "NODES"], rows
            ubuntu = [x.split() for x in rows if x.split()[0] == "ubuntu"]
            assert ubuntu and ubuntu[0][1:5] == ["1000-1999", "0/1000", "1", "full"], rows
            debian = [x.split() for x in rows if x.split()[0] == "debian"]
            assert debian and debian[0][1:4] == ["4000-4009", "1/10", "0"], rows
            r = json.loads(ctl("--json", "os", "list").stdout)
            rg = [o for o in r["os"] if o["name"] == "ubuntu"][0]["range"]
            assert rg["allocated"] == 1 and rg["quarantined"] == 1, rg  # allocated as before
        finally:
            execute(px.db, "DELETE FROM vmid_alloc WHERE vmid = 1000")

    @case
    def job_show_and_watch():
        r = ctl("--json", "vm", "stop", "4000")
        assert r.returncode == 0, r.stderr
        job = json.loads(r.stdout)
        assert job["state"] == "done" and job["kind"] == "stop", job
        r = ctl("job", "show", job["id"])
        assert r.returncode == 0 and "state     done" in r.stdout, r.stdout
        r = ctl("job", "watch", job["id"])
        assert r.returncode == 0 and "done" in r.stdout
        # list: newest first, the stop on top; pages of the API joined to --limit
        r = ctl("job", "list", "--vmid", "4000")
        rows = r.stdout.splitlines()
        assert r.returncode == 0 and rows[0].split()[:3] == ["ID", "KIND", "STATE"], r.stdout
        assert rows[1].split()[:3] == [job["id"], "stop", "done"], rows
        every = json.loads(ctl("--json", "job", "list", "--limit", "1000").stdout)
        assert len(every) >= 3 and every[0]["id"] == job["id"], every
        two = json.loads(ctl("--json", "job", "list", "--limit", "2").stdout)
        assert [j["id"] for j in two] == [j["id"] for j in every[:2]], two
        done = json.loads(ctl("--json", "job", "list", "--state", "done", "--kind", "stop").stdout)
        assert done and all(j["kind"] == "stop" and j["state"] == "done" for j in done), done
        assert ctl("job", "list", "--state", "finished").returncode == 2  # 400 naming state
        assert ctl("job", "list", "--limit", "0").returncode == 2

    @case
    def exit_codes():
        assert ctl("vm", "show", "424242").returncode == 3  # not found
        r = ctl("vm", "show", "4000", token=state["alice"])  # another owner's VM: 404 too
        assert r.returncode == 3, (r.returncode, r.stderr)
        assert ctl("vm", "list", token="pxd_bogus_token").returncode == 4
        r = ctl("vm", "create", "--os", "ubuntu", "--name", "bad name", "--cores", "1",
                "--memory", "1G", "--disk", "10G")
        assert r.returncode == 2 and "name" in r.stderr, (r.returncode, r.stderr)
        assert ctl("vm", "create", "--os", "ubuntu").returncode == 2  # usage
        assert ctl("vm", "create", "--memory", "lots").returncode == 2
        assert ctl("vm", "resume", "4000").returncode == 6  # conflict: it is stopped
        r = ctl("vm", "list", env={"PROXD_URL": "http://127.0.0.1:1"})
        assert r.returncode == 5 and "cannot reach" in r.stderr
        assert ctl("frobnicate").returncode == 2
        assert ctl("--help").returncode == 0

    @case
    def job_cancel():
        sim, px = state["sim"], state["px"]
        assert ctl("job", "cancel", "00000000-0000-4000-8000-000000000000").returncode == 3
        assert ctl("job", "cancel", "not/a/job").returncode == 2  # usage
        assert ctl("job", "cancel").returncode == 2
        done = json.loads(ctl("--json", "job", "list", "--state", "done", "--limit", "1").stdout)
        r = ctl("job", "cancel", done[0]["id"])
        assert r.returncode == 6 and "has finished (done)" in r.stderr, (r.returncode, r.stderr)
        # a creation held in its clone call: asked, then waited for
        sim.add_faults([{"kind": "delay", "path": r"/qemu/\d+/clone$", "method": "POST",
                         "delay_ms": 3000, "count": 1}])
        r = ctl("--json", "vm", "create", "--os", "ubuntu", "--name", "gone-1", "--cores", "1",
                "--memory", "1G", "--disk", "10G", "--no-wait")
        assert r.returncode == 0, r.stderr
        job, vmid = json.loads(r.stdout)["job"], json.loads(r.stdout)["vmid"]
        r = ctl("job", "cancel", job, "--no-wait")
        assert r.returncode == 0 and "cancel requested" in r.stdout, (r.stdout, r.stderr)
        r = ctl("job", "cancel", job)  # again: harmless, and it waits for the stop
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        assert r.stdout.startswith("job %s cancelled: cancelled by ops at step " % job), r.stdout
        assert sim.vm(vmid) is None
        j = json.loads(ctl("--json", "job", "cancel", job).stdout)
        assert j["state"] == "failed" and j["cancel"]["by"] == "ops", j
        # a stop whose call went out finishes: exit 1, said so
        sim.add_faults([{"kind": "delay", "path": r"/qemu/4000/status/start$", "method": "POST",
                         "delay_ms": 5000, "count": 1}])  # (the cancel comes meanwhile)
        r = ctl("--json", "vm", "start", "4000", "--no-wait")
        assert r.returncode == 0, r.stderr
        job = json.loads(r.stdout)["job"]
        wait_for(lambda: query(px.db, "SELECT step FROM jobs WHERE id = ?", (job,))[0][0]
                 == "call", 10, 0.002, "the start's call")
        r = ctl("job", "cancel", job)
        assert r.returncode == 1 and "finished before the cancel took effect" in r.stderr, \
            (r.returncode, r.stdout, r.stderr)

    @case
    def config_file_and_flags():
        cfg = os.path.join(state["home"], "proxctl.conf")
        with open(cfg, "w") as f:
            f.write("# proxctl\nserver = %s\ntoken = %s\n" % (state["px"].base, state["alice"]))
        e = dict(os.environ, HOME=state["home"])
        e.pop("PROXD_URL", None)
        e.pop("PROXD_TOKEN", None)
        r = subprocess.run([PROXCTL, "--config", cfg, "--json", "vm", "list"], capture_output=True,
                           text=True, env=e, timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout) == [], (r.stdout, r.stderr)
        # a flag wins over the file
        r = subprocess.run([PROXCTL, "--config", cfg, "--token", state["admin"], "--json", "vm",
                            "list"], capture_output=True, text=True, env=e, timeout=60)
        assert len(json.loads(r.stdout)) == 1
        with open(cfg, "w") as f:
            f.write("colour = blue\n")
        r = subprocess.run([PROXCTL, "--config", cfg, "vm", "list"], capture_output=True,
                           text=True, env=e, timeout=60)
        assert r.returncode == 2 and "unknown key 'colour'" in r.stderr

    @case
    def a_restart_of_proxd_while_a_job_is_followed_is_waited_out():
        # proxd ends the job's event stream ("shutdown") when it stops; the
        # job goes on after the restart. proxctl took any end of the stream
        # for the job's: "job ... failed" (exit 1, or 5 when proxd was already
        # gone) while the job ran, and a script retrying it made a second VM.
        sim, px = state["sim"], state["px"]
        sim.add_faults([{"kind": "delay", "path": r"/qemu/\d+/clone$", "method": "POST",
                         "delay_ms": 2000, "count": 1}])
        e = dict(os.environ, HOME=state["home"], PROXD_URL=px.base, PROXD_TOKEN=state["admin"])
        e.pop("PROXCTL_CONFIG", None)
        err = tempfile.TemporaryFile(mode="w+")
        p = subprocess.Popen([PROXCTL, "vm", "create", "--os", "ubuntu", "--name", "rs-1",
                              "--cores", "1", "--memory", "1G", "--disk", "10G"],
                             stdout=subprocess.PIPE, stderr=err, text=True, env=e)
        out = []

        def read():
            for ln in p.stdout:
                out.append(ln.rstrip("\n"))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            # the clone step printed: it came from the stream (the poll only
            # runs after it), so proxctl is on the stream when proxd stops
            wait_for(lambda: any(ln.split()[1:2] in (["clone"], ["clone:"]) for ln in list(out)),
                     30, 0.05, "proxctl to show the clone step")
            px.stop()
            px.start()
            rc = p.wait(120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        reader.join(10)
        err.seek(0)
        text = err.read()
        assert rc == 0, (rc, out, text)
        assert out[-1].startswith("VM ") and "(rs-1) is running on" in out[-1], (out, text)
        made = [v for v in sim.state()["vms"] if v["conf"].get("name") == "rs-1"]
        assert len(made) == 1, made

    @case
    def arguments_that_were_ignored_or_misread_are_refused():
        px = state["px"]

        def njobs():
            return len(px.call("GET", "/v1/jobs?limit=1000", state["admin"]).json()["jobs"])
        vms = []
        for name in ("arg-1", "arg-2"):
            r = ctl("--json", "vm", "create", "--os", "ubuntu", "--name", name, "--cores", "1",
                    "--memory", "1G", "--disk", "10G")
            assert r.returncode == 0, (r.stdout, r.stderr)
            vms.append(str(json.loads(r.stdout)["vmid"]))
        before = njobs()
        # each was queued: "delete A B" deleted A and exited 0; "--timeout 5m"
        # sent 5, "--cores 2x" 2
        for args, says in ((["vm", "delete"] + vms, "unexpected '%s'" % vms[1]),
                           (["vm", "stop", vms[0], "--no-wait", vms[1]], "unexpected"),
                           (["vm", "shutdown", vms[0], "--timeout", "5m", "--force"],
                            "--timeout: '5m'"),
                           (["vm", "set", vms[0], "--cores", "2x"], "--cores: '2x'"),
                           (["vm", "create", "--os", "ubuntu", "--name", "arg-3", "--cores",
                             "2x"], "--cores: '2x'"),
                           (["vm", "reinstall", vms[0], vms[1], "--os", "debian"], "unexpected"),
                           (["vm", "start", vms[0] + "x"], "VMID"),
                           (["vm", "delete"], "a VMID is required")):
            r = ctl(*args)
            assert r.returncode == 2 and says in r.stderr, (args, r.returncode, r.stderr)
        assert njobs() == before
        for v in vms:
            assert json.loads(ctl("--json", "vm", "show", v).stdout)["state"] == "enabled"
        # options after the VMID are still options
        r = ctl("vm", "delete", vms[0], "--no-wait")
        assert r.returncode == 0 and r.stdout.startswith("job "), (r.stdout, r.stderr)

    @case
    def a_cell_too_long_is_cut_between_characters():
        # a value past a cell's 159 bytes was cut by bytes: half a UTF-8
        # character on the terminal. proxd's names are short; a proxd of
        # another version (or anything behind PROXD_URL) may send longer.
        vm = {"vmid": 7, "name": "\u00e9" * 100, "owner": "o", "node": "sv1", "os": "ubuntu",
              "state": "enabled", "power": "running", "cores": 1, "memory_mb": 512,
              "disk_gb": 10}
        body = json.dumps({"vms": [vm], "next": None}).encode()

        class Vms(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Vms)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            e = dict(os.environ, HOME=state["home"], PROXD_TOKEN=state["admin"],
                     PROXD_URL="http://127.0.0.1:%d" % srv.server_address[1])
            e.pop("PROXCTL_CONFIG", None)
            r = subprocess.run([PROXCTL, "vm", "list"], capture_output=True, timeout=60, env=e)
            assert r.returncode == 0, (r.returncode, r.stderr)
            out = r.stdout.decode("utf-8")  # strict: half a character raises
            row = out.splitlines()[1]
            assert (" %s... " % ("\u00e9" * 78)) in row, row  # 156 bytes and the marker
        finally:
            srv.shutdown()
            srv.server_close()

    @case
    def an_answer_that_is_not_proxds_is_a_server_error():
        # a wrong PROXD_URL (a login page) answers 200: "job ? queued", exit 0
        class Login(http.server.BaseHTTPRequestHandler):
            def answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                body = b"<html>please log in</html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            do_GET = do_POST = do_PATCH = do_DELETE = answer

            def log_message(self, *a):
                pass
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Login)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            url = "http://127.0.0.1:%d" % srv.server_address[1]
            for args in (["vm", "start", "4000"], ["vm", "start", "4000", "--no-wait"],
                         ["vm", "create", "--os", "ubuntu", "--name", "x", "--no-wait"]):
                r = ctl(*args, env={"PROXD_URL": url})
                assert r.returncode == 5 and "names no job" in r.stderr, (args, r.returncode,
                                                                          r.stdout, r.stderr)
                assert "queued" not in r.stdout, r.stdout
        finally:
            srv.shutdown()
            srv.server_close()


main()
finish()

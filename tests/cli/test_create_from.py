"""proxctl vm create --from FILE: many creations through the API over one
kept-alive connection (counted by a loopback relay in front of proxd).
Every line is checked (dry run) before any is submitted: bad lines are
reported with their number and field and nothing is submitted; an
idempotency key repeated across runs makes one VM; a submission whose
answer the relay loses is not sent again; under random pvesim faults with a
node offline every job still ends."""
import json
import os
import socket
import subprocess
import tempfile
import threading

from lib.cases import case, finish
from lib.env import PROXCTL
from lib.faults import fault_rules
from lib.proxd import Proxd
from lib.sim import Sim
from lib.wait import wait_for

state = {}


class Relay:
    """127.0.0.1:port -> proxd, counting the connections it accepts.
    lose: the start of a request (bytes) whose answer, the first time it
    passes, is lost: the request reaches proxd, and once proxd has answered
    the client's connection is closed without a byte of it."""

    def __init__(self, target_port, lose=None):
        self.target = target_port
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.accepted = 0
        self.lose = lose
        self.lost = threading.Event()  # set when the request to lose went to proxd
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            u = socket.create_connection(("127.0.0.1", self.target))
            drop = {"now": False}  # this connection's answer to lose is on its way
            threading.Thread(target=self._pipe, args=(c, u, drop, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, drop, False), daemon=True).start()

    def _pipe(self, a, b, drop, upstream):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if upstream and self.lose and not self.lost.is_set() and self.lose in d:
                    drop["now"] = True  # before proxd can answer it
                    self.lost.set()
                if not upstream and drop["now"]:
                    break  # proxd answered: close on the client, nothing sent
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.ls.close()


def req(name, os_name="ubuntu", **kw):
    r = {"os": os_name, "name": name, "cores": 1, "memory_mb": 512, "disk_gb": 20}
    r.update(kw)
    return r


def ctl_from(lines, *args, token=None, url=None):
    text = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)
    path = os.path.join(state["home"], "batch.jsonl")
    with open(path, "w") as f:
        f.write(text)
    e = dict(os.environ, HOME=state["home"], PROXD_URL=url or state["px"].base,
             PROXD_TOKEN=token or state["admin"])
    e.pop("PROXCTL_CONFIG", None)
    return subprocess.run([PROXCTL] + list(args) + ["vm", "create", "--from", path],
                          capture_output=True, text=True, timeout=180, env=e)


def out_json(r):
    return [json.loads(ln) for ln in r.stdout.splitlines()]


def njobs():
    return len(state["px"].call("GET", "/v1/jobs?limit=1000", state["admin"]).json()["jobs"])


def wait_ended(jobs, deadline=120):
    px = state["px"]

    def ended():
        st = {}
        for j in jobs:
            s = px.call("GET", "/v1/jobs/" + j, state["admin"]).json()["state"]
            if s not in ("done", "failed"):
                return None
            st[j] = s
        return st
    return wait_for(ended, deadline, 0.2, "%d jobs to end" % len(jobs))


def main():
    with Sim(time_scale=0.01, extra=["--seed", "23"]) as sim:
        px = Proxd(sim, proxmox_extra="connect_timeout = 1\ntimeout = 3\n")
        state.update(sim=sim, px=px, home=tempfile.mkdtemp(prefix="proxctl-home-"),
                     admin=px.token("ops", "admin"), alice=px.token("alice", "user"))
        px.start()
        try:
            run_cases()
        finally:
            sim.ctl("DELETE", "/faults")
            px.stop()


def run_cases():
    sim, px = state["sim"], state["px"]

    @case
    def a_batch_goes_over_one_connection_and_every_job_ends_done():
        relay = Relay(px.port)
        try:
            lines = [req("cf-%02d" % i, "debian" if i == 2 else "ubuntu", owner="alice")
                     for i in range(8)]
            r = ctl_from(lines, "--json", url="http://127.0.0.1:%d" % relay.port)
        finally:
            relay.close()
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        got = out_json(r)
        assert [g["line"] for g in got] == list(range(1, 9)), got
        assert len({g["vmid"] for g in got}) == 8
        assert relay.accepted == 1, relay.accepted  # 8 dry runs + 8 submissions, one connection
        st = wait_ended([g["job"] for g in got])
        assert set(st.values()) == {"done"}, st
        for g, ln in zip(got, lines):
            v = px.call("GET", "/v1/vms/%d" % g["vmid"], state["alice"]).json()
            assert v["name"] == ln["name"] and v["power"] == "running", v
        # text output, from a user's token: one line per request
        r = ctl_from([req("cf-u1"), "", req("cf-u2")], token=state["alice"])
        rows = r.stdout.splitlines()
        assert r.returncode == 0 and len(rows) == 2, (r.stdout, r.stderr)
        assert rows[0].startswith("line 1: job ") and rows[1].startswith("line 3: job "), rows
        wait_ended([ln.split()[3] for ln in rows])

    @case
    def bad_lines_are_named_and_nothing_is_submitted():
        lines = [req("ok-1"),
                 '{"os": "ubuntu", "name": ',                         # 2: not JSON
                 {k: v for k, v in req("ok-x").items() if k != "disk_gb"},  # 3: missing
                 req("bad name"),                                     # 4: invalid
                 req("ok-2", cores=0),                                # 5: out of range
                 req("ok-3", "plan9"),                                # 6: unknown OS
                 "[1]",                                               # 7: not an object
                 req("ok-4", colour="blue"),                          # 8: unknown field
                 req("ok-5", idempotency_key="has space"),            # 9: bad key
                 req("ok-6")]
        before = njobs()
        r = ctl_from(lines, token=state["alice"])
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("proxctl: line ")]
        want = {2: "not JSON", 3: "disk_gb: required", 4: "name: must be a DNS label",
                5: "cores: must be between", 6: "os: unknown OS 'plan9'",
                7: "must be a JSON object", 8: "colour: unknown field", 9: "idempotency_key: "}
        assert len(err) == len(want), err
        for ln, (no, text) in zip(err, sorted(want.items())):
            assert ln.startswith("proxctl: line %d: %s" % (no, text)), (ln, no, text)
        assert "8 bad lines: nothing submitted" in r.stderr, r.stderr
        assert njobs() == before
        got = out_json(ctl_from(lines, "--json", token=state["alice"]))
        assert [g["line"] for g in got] == sorted(want), got
        assert got[1]["error"] == {"field": "disk_gb", "message": "required", "status": 400}
        # another owner's VM from a user's token: refused before anything, exit 4
        r = ctl_from([req("ok-7"), req("ok-8", owner="bob")], token=state["alice"])
        assert r.returncode == 4 and "line 2: owner: only an admin" in r.stderr, r.stderr
        assert njobs() == before

    @case
    def an_idempotency_key_repeated_across_runs_makes_one_vm():
        lines = [req("ik-%d" % i, idempotency_key="batch-9-%d" % i) for i in range(3)]
        first = out_json(ctl_from(lines, "--json", token=state["alice"]))
        assert len(first) == 3, first
        before = njobs()
        again = ctl_from(lines, "--json", token=state["alice"])
        assert again.returncode == 0, again.stderr
        assert [(g["job"], g["vmid"]) for g in out_json(again)] == \
            [(g["job"], g["vmid"]) for g in first]
        # each line says it was queued before, in JSON and in text
        assert all(g.get("replayed") is True for g in out_json(again)), again.stdout
        assert not any("replayed" in g for g in first), first
        text = ctl_from(lines, token=state["alice"])
        assert text.returncode == 0, text.stderr
        assert text.stdout.count("(queued before with this idempotency key)") == 3, text.stdout
        assert njobs() == before
        # a key used before for another request: found by the check, nothing submitted
        r = ctl_from([req("ik-new"), dict(lines[2], cores=2)], token=state["alice"])
        assert r.returncode == 6 and "line 2: idempotency_key: " in r.stderr, r.stderr
        assert njobs() == before
        # one key on two lines of a file for two requests: found by the check,
        # nothing submitted (proxd's dry run knew neither: the first was
        # queued, then the second refused); for one request: one job
        r = ctl_from([req("ik-c1", idempotency_key="clash-1"),
                      req("ik-c2", idempotency_key="clash-1")], token=state["alice"])
        assert r.returncode == 6, (r.returncode, r.stdout, r.stderr)
        assert "proxctl: line 2: idempotency_key: this key is used on line 1 for a different " \
            "request" in r.stderr and "1 bad line: nothing submitted" in r.stderr, r.stderr
        assert r.stdout == "" and njobs() == before, r.stdout
        twice = out_json(ctl_from([req("ik-t", idempotency_key="twice-1")] * 2, "--json",
                                  token=state["alice"]))
        assert twice[0]["job"] == twice[1]["job"] and twice[1]["replayed"], twice
        assert njobs() == before + 1
        first.append(twice[0])
        # a line without an owner and one naming the caller are one request,
        # as proxd has it (proxctl called them different: nothing submitted)
        for token, me in ((state["alice"], "alice"), (state["admin"], "ops")):
            key = "owned-" + me
            lines = [req("ik-o-" + me, idempotency_key=key),
                     req("ik-o-" + me, idempotency_key=key, owner=me),
                     req("ik-o-" + me, idempotency_key=key, owner=None)]
            r = ctl_from(lines, "--json", token=token)
            assert r.returncode == 0, (me, r.returncode, r.stdout, r.stderr)
            got = out_json(r)
            assert len({g["job"] for g in got}) == 1 and got[1]["replayed"], got
            first.append(got[0])
        assert njobs() == before + 3
        # another owner than the caller is another request still
        r = ctl_from([req("ik-o2", idempotency_key="owned-2"),
                      req("ik-o2", idempotency_key="owned-2", owner="alice")])
        assert r.returncode == 6 and "line 2: idempotency_key: this key is used on line 1" \
            in r.stderr, (r.returncode, r.stdout, r.stderr)
        assert njobs() == before + 3
        wait_ended([g["job"] for g in first])

    @case
    def a_refusal_at_submission_is_its_lines_alone():
        # bob's quota is one VM: every line passes the dry run (quota is the
        # submission's to decide); the second is refused and named, the
        # others are queued; the exit status is the quota's (6, as for one)
        before = njobs()
        r = ctl_from([req("q-1", owner="bob"), req("q-2", owner="bob"), req("q-3")], "--json")
        assert r.returncode == 6, (r.returncode, r.stdout, r.stderr)
        got = out_json(r)
        assert [g["line"] for g in got] == [1, 2, 3] and "job" in got[0] and "job" in got[2], got
        assert got[1]["error"]["field"] == "quota" and got[1]["error"]["status"] == 403, got[1]
        assert njobs() == before + 2
        assert set(wait_ended([got[0]["job"], got[2]["job"]]).values()) == {"done"}
        # the single form: a used-up quota is exit 6 too (it was 4, "not authorised")
        e = dict(os.environ, HOME=state["home"], PROXD_URL=px.base, PROXD_TOKEN=state["admin"])
        r = subprocess.run([PROXCTL, "vm", "create", "--os", "ubuntu", "--name", "q-4",
                            "--cores", "1", "--memory", "512", "--disk", "20", "--owner", "bob",
                            "--no-wait"], capture_output=True, text=True, env=e, timeout=60)
        assert r.returncode == 6 and "quota" in r.stderr, (r.returncode, r.stderr)

    @case
    def a_submission_whose_answer_is_lost_is_not_sent_again():
        # the kept-alive connection closes without an answer after the first
        # submission went out (proxd made its job): libcurl sent the POST again
        # by itself on a new connection, and the line was queued twice
        relay = Relay(px.port, lose=b"POST /v1/vms HTTP/")

        def job_ids():
            return {j["id"] for j in px.call("GET", "/v1/jobs?limit=1000",
                                             state["admin"]).json()["jobs"]}
        before = job_ids()
        try:
            r = ctl_from([req("lost-1"), req("lost-2")], token=state["alice"],
                         url="http://127.0.0.1:%d" % relay.port)
        finally:
            relay.close()
        assert relay.lost.is_set()
        assert r.returncode == 5, (r.returncode, r.stdout, r.stderr)
        assert "may have been sent" in r.stderr and \
            "line 1: the server did not answer: this line may have been submitted" in r.stderr, \
            r.stderr
        new = job_ids() - before
        assert len(new) == 1, new  # line 1's, once
        st = wait_ended(list(new))
        job = px.call("GET", "/v1/jobs/" + new.pop(), state["admin"]).json()
        assert list(st.values()) == ["done"], job
        names = [v["conf"].get("name") for v in sim.state()["vms"]]
        assert names.count("lost-1") == 1 and "lost-2" not in names, names

    @case
    def faults_and_a_dead_node_still_end_every_job():
        sim.ctl("POST", "/nodes/sv3", {"state": "offline"})
        for rule in fault_rules(0.25):
            sim.ctl("POST", "/faults", rule)
        try:
            r = ctl_from([req("cff-%02d" % i, owner="ops") for i in range(10)], "--json")
            assert r.returncode == 0, (r.stdout, r.stderr)
            got = out_json(r)
            st = wait_ended([g["job"] for g in got], deadline=240)
        finally:
            sim.ctl("DELETE", "/faults")
            sim.ctl("POST", "/nodes/sv3", {"state": "online"})
            sim.wait_late()
        for g in got:
            # a creation may go on under another VMID than the one it was
            # queued with (one found taken on Proxmox): the job has the final one
            job = px.call("GET", "/v1/jobs/" + g["job"], state["admin"]).json()
            v = px.call("GET", "/v1/vms/%d" % job["vmid"], state["admin"])
            if st[g["job"]] == "done":
                assert v.status_code == 200 and v.json()["state"] == "enabled", (job, v.text)
                assert v.json()["job"] == g["job"] and v.json()["node"] != "sv3", v.text
                assert sim.vm(job["vmid"], v.json()["node"]), v.text
            else:  # no live record is left by a failed creation
                assert v.status_code == 404 or v.json()["job"] != g["job"] or \
                    v.json()["state"] == "failed", (job, v.text)

    @case
    def no_server_nothing_submitted():
        r = ctl_from([req("ns-1")], url="http://127.0.0.1:1")
        assert r.returncode == 5 and "cannot reach" in r.stderr, r.stderr


main()
finish()

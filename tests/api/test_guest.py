"""Is the guest up? (core/guestwatch.h) After a creation, start, reboot or
reinstall is done, proxd asks the VM's QEMU guest agent until it answers,
for [proxd] guest_wait seconds, and tells the outcome once per job, in the
event log (vm.guest_ready; vm.guest_silent with data.reason) and in the
job (GET /v1/jobs/{id}: guest.state waiting, ready, silent or skipped): a
hosting platform's "your server is ready" comes from the guest, not from
the start task. It told nothing: a job was done when Proxmox's start task
ended, whether the guest ever booted or not.
  - a creation's guest is ready once (pvesim's agent answers 15 simulated
    seconds after the start), a reboot's again, a stop job has no check;
  - a template without an agent: silent at once, saying so;
  - an agent that never answers (agent disabled): silent after guest_wait;
  - a proxd killed while it waits: its restart tells the outcome, once,
    and two instances on one database tell it once between them."""
import os
import signal
import subprocess

from lib import eventcheck
from lib.cases import case, finish
from lib.env import PROXCTL
from lib.proxd import OSES, TEMPLATE_BASE, Proxd
from lib.sim import Sim
from lib.wait import wait_for

NODES = 5


def templates_agent(sim, value):
    """Every node's ubuntu template's `agent` option (None: removed)."""
    for i in range(NODES):
        sim.ctl("POST", "/vms/%d" % (TEMPLATE_BASE + 10 * i + OSES.index("ubuntu")),
                {"conf": {"agent": value}})


def create(px, token, name):
    r = px.call("POST", "/v1/vms", token, {"os": "ubuntu", "name": name, "cores": 1,
                                           "memory_mb": 512, "disk_gb": 12})
    assert r.status_code == 202, r.text
    j = px.wait_job(r.json()["job"], token, deadline=120)
    assert j["state"] == "done", j
    return j


def guest_events(px, token, job):
    evs = px.call("GET", "/v1/events?limit=1000", token).json()["events"]
    return [e for e in evs if e["type"].startswith("vm.guest_") and e["job"] == job]


def outcome(px, token, job, deadline=30):
    """The job's guest outcome once it has one: (job's guest, its events)."""
    def told():
        g = px.call("GET", "/v1/jobs/" + job, token).json()["guest"]
        return g if g["state"] != "waiting" else None
    g = wait_for(told, deadline, 0.1, "job %s's guest outcome" % job)
    return g, guest_events(px, token, job)


@case
def a_guest_is_told_ready_after_a_creation_and_a_reboot():
    with Sim(time_scale=0.05) as sim:
        px = Proxd(sim)
        alice = px.token("alice")
        px.start()
        try:
            j = create(px, alice, "g1")
            vmid = j["vmid"]
            g, evs = outcome(px, alice, j["id"])
            assert g["state"] == "ready" and g["detail"] == "" and g["at"], g
            assert len(evs) == 1 and evs[0]["type"] == "vm.guest_ready", evs
            e = evs[0]
            assert e["vmid"] == vmid and e["owner"] == "alice" and e["node"], e
            assert e["data"]["kind"] == "create" and e["data"]["after_s"] >= 0, e
            # the VM shows its last start's guest while it runs
            v = px.call("GET", "/v1/vms/%d" % vmid, alice).json()
            assert v["guest"] == {"state": "ready", "job": j["id"], "kind": "create",
                                  "at": g["at"], "detail": ""}, v
            shown = subprocess.run([PROXCTL, "job", "show", j["id"]], capture_output=True,
                                   text=True, timeout=30,
                                   env=dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=alice))
            assert "\nguest     ready at %s\n" % g["at"] in shown.stdout, shown
            shown = subprocess.run([PROXCTL, "vm", "show", str(vmid)], capture_output=True,
                                   text=True, timeout=30,
                                   env=dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=alice))
            assert "\nguest       ready (create job %s)\n" % j["id"] in shown.stdout, shown
            # proxctl waits for the guest of a reboot it asks for
            env = dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=alice)
            r = subprocess.run([PROXCTL, "vm", "reboot", str(vmid), "--wait-guest"],
                               capture_output=True, text=True, timeout=120, env=env)
            assert r.returncode == 0 and "guest of VM %d is ready (" % vmid in r.stdout, r
            r = subprocess.run([PROXCTL, "vm", "stop", str(vmid), "--wait-guest"],
                               capture_output=True, text=True, timeout=60, env=env)
            assert r.returncode == 2 and "--wait-guest is for vm create, start" in r.stderr, r
            # a stop has no check; a start and a reboot each have one
            for action in ("stop", "start", "reboot"):
                r = px.call("POST", "/v1/vms/%d/%s" % (vmid, action), alice)
                assert r.status_code == 202, r.text
                done = px.wait_job(r.json()["job"], alice)
                assert done["state"] == "done", done
                if action == "stop":
                    got = px.call("GET", "/v1/jobs/" + done["id"], alice).json()
                    assert "guest" not in got, got
                    v = px.call("GET", "/v1/vms/%d" % vmid, alice).json()
                    assert "guest" not in v, v  # stopped: nothing to tell
                    continue
                g, evs = outcome(px, alice, done["id"])
                assert g["state"] == "ready", (action, g)
                assert [x["type"] for x in evs] == ["vm.guest_ready"], evs
                assert evs[0]["data"]["kind"] == action, evs
                v = px.call("GET", "/v1/vms/%d" % vmid, alice).json()
                assert v["guest"]["job"] == done["id"] and v["guest"]["state"] == "ready", v
            # one event per job, for every job that started the VM
            all_evs = px.call("GET", "/v1/events?type=vm.guest_ready&limit=1000",
                              alice).json()["events"]
            assert len(all_evs) == 4 and len({x["job"] for x in all_evs}) == 4, all_evs
            assert px.logs_contain("guest ready after"), px.tail()
        finally:
            px.stop()


@case
def a_template_without_an_agent_is_told_silent_at_once():
    with Sim(time_scale=0.05) as sim:
        templates_agent(sim, None)
        px = Proxd(sim)
        alice = px.token("alice")
        px.start()
        try:
            j = create(px, alice, "g2")
            g, evs = outcome(px, alice, j["id"], deadline=20)
            assert g["state"] == "silent", g
            assert g["detail"].startswith("no QEMU guest agent is configured for the VM"), g
            assert len(evs) == 1 and evs[0]["type"] == "vm.guest_silent", evs
            assert evs[0]["data"]["reason"] == g["detail"], evs
        finally:
            px.stop()


@case
def an_agent_that_never_answers_is_told_silent_after_guest_wait():
    with Sim(time_scale=0.05) as sim:
        templates_agent(sim, "0")  # configured, disabled: "not running" for ever
        px = Proxd(sim, proxd_extra="guest_wait = 2\n")
        alice = px.token("alice")
        px.start()
        try:
            # proxctl's --wait-guest tells the silence and exits 1
            r = subprocess.run([PROXCTL, "vm", "create", "--os", "ubuntu", "--name", "g3w",
                                "--cores", "1", "--memory", "512", "--disk", "12G",
                                "--wait-guest"], capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=alice))
            assert r.returncode == 1 and "is silent: the guest agent did not answer within 2 s" \
                in r.stderr, r
            j = create(px, alice, "g3")
            g, evs = outcome(px, alice, j["id"], deadline=20)
            assert g["state"] == "silent", g
            assert g["detail"] == ("the guest agent did not answer within 2 s (last: QEMU guest "
                                   "agent is not running)"), g
            assert len(evs) == 1 and evs[0]["data"]["after_s"] >= 2, evs
        finally:
            px.stop()


@case
def a_restart_and_a_second_instance_tell_it_once():
    with Sim(time_scale=0.05) as sim:
        templates_agent(sim, "0")
        # a long wait: the kill comes while the checks are pending
        a = Proxd(sim, proxd_extra="guest_wait = 4\n")
        alice = a.token("alice")
        a.start()
        b = None
        try:
            jobs = [create(a, alice, "k%d" % i)["id"] for i in range(2)]
            assert all(a.call("GET", "/v1/jobs/" + j, alice).json()["guest"]["state"] ==
                       "waiting" for j in jobs)
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait()
            b = Proxd(sim, share=a, proxd_extra="guest_wait = 4\n")
            b.start()
            a.start()
            for j in jobs:
                g, evs = outcome(b, alice, j, deadline=30)
                assert g["state"] == "silent", g
                assert len(evs) == 1, evs
            # both instances looked: still one outcome each
            evs = b.call("GET", "/v1/events?type=vm.guest_silent&limit=1000",
                         alice).json()["events"]
            assert sorted(e["job"] for e in evs) == sorted(jobs), evs
            assert not eventcheck.problems(a.db), eventcheck.problems(a.db)
        finally:
            if b:
                b.stop()
            a.stop()


finish()

"""Smoke test: pvesim starts, authenticates, serves the basic endpoints and stops cleanly."""
from lib.cases import case, finish
from lib.sim import Sim


@case
def version_needs_credentials():
    with Sim() as s:
        r = s.api("GET", "/version", auth=None)
        assert r.status_code == 401 and r.reason == "No ticket", (r.status_code, r.reason)
        assert r.text == "" and "Content-Type" not in r.headers
        v = s.data("GET", "/version")
        assert v["version"] == "9.1.3" and v["release"] == "9.1"


@case
def nodes_and_templates():
    with Sim(nodes="a1,a2") as s:
        nodes = s.data("GET", "/nodes")
        assert sorted(n["node"] for n in nodes) == ["a1", "a2"]
        vms = s.data("GET", "/nodes/a2/qemu")
        assert sorted(v["vmid"] for v in vms) == [8010, 8011, 8012, 8013]
        assert all(v.get("template") == 1 for v in vms)


finish()

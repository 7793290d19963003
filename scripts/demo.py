"""The pvesim demo: a five-node fleet and one VM's life, printed step by step."""
import os
import subprocess
import sys
import time
import urllib.parse

import requests
import urllib3

urllib3.disable_warnings()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PVESIM = os.path.join(ROOT, "build", "pvesim")
PASSWORD = "SECRET"


def step(msg):
    print("\n==> " + msg, flush=True)


def main():
    port = int(os.environ.get("DEMO_PORT", "18006"))
    sim = subprocess.Popen([PVESIM, "--listen", "127.0.0.1:%d" % port, "--nodes",
                            "sv1,sv2,sv3,sv4,sv5", "--password", PASSWORD,
                            "--token", "root@pam!ci=8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50",
                            "--time-scale", "0.05", "--log-level", "warn"],
                           stdout=subprocess.PIPE, text=True)
    try:
        for line in sim.stdout:
            print("   pvesim: " + line.strip())
            if line.startswith("fingerprint"):
                break
        run(port)
    finally:
        sim.terminate()
        sim.wait(10)
        print("\npvesim stopped; demo done.")


def run(port):
    base = "https://127.0.0.1:%d/api2/json" % port
    s = requests.Session()
    s.verify = False

    def call(method, path, **kw):
        r = s.request(method, base + path, timeout=30, verify=False, **kw)
        if r.status_code != 200:
            print("   %s %s -> HTTP %d %s" % (method, path, r.status_code, r.reason))
            return None
        return r.json()["data"]

    def wait(node, upid, what):
        t0 = time.time()
        while True:
            st = call("GET", "/nodes/%s/tasks/%s/status" % (node, upid))
            if st["status"] == "stopped":
                print("   task %s finished in %.1fs: %s" % (what, time.time() - t0, st["exitstatus"]))
                return st["exitstatus"]
            time.sleep(0.1)

    step("log in as root@pam (ticket + CSRF token)")
    t = call("POST", "/access/ticket", data={"username": "root@pam", "password": PASSWORD})
    s.cookies.set("PVEAuthCookie", t["ticket"])
    s.headers["CSRFPreventionToken"] = t["CSRFPreventionToken"]
    print("   ticket %s...  CSRF %s" % (t["ticket"][:30], t["CSRFPreventionToken"]))
    v = call("GET", "/version")
    print("   Proxmox VE %s" % v["version"])

    step("the fleet")
    for n in sorted(call("GET", "/nodes"), key=lambda n: n["node"]):
        print("   %-4s %-7s %2d CPUs  %3d GiB RAM" % (n["node"], n["status"], n["maxcpu"], n["maxmem"] >> 30))
    tpls = [v for v in call("GET", "/nodes/sv1/qemu") if v.get("template")]
    print("   templates on sv1: " + ", ".join("%d (%s)" % (v["vmid"], v["name"]) for v in sorted(tpls, key=lambda v: v["vmid"])))

    step("take node sv1 offline and see how the cluster shows it")
    requests.post("https://127.0.0.1:%d/_sim/nodes/sv1" % port, json={"state": "offline"}, verify=False)
    r = s.get(base + "/nodes/sv1/status", verify=False)
    print("   GET /nodes/sv1/status -> HTTP %d %s" % (r.status_code, r.reason))
    requests.post("https://127.0.0.1:%d/_sim/nodes/sv1" % port, json={"state": "online"}, verify=False)
    print("   sv1 back online")

    vmid = int(call("GET", "/cluster/nextid", params={"vmid": 1000}))
    step("full clone of the ubuntu template 8000 on sv1 to VM %d" % vmid)
    upid = call("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": vmid, "name": "web-1", "full": 1})
    print("   %s" % upid)
    wait("sv1", upid, "qmclone")
    log = call("GET", "/nodes/sv1/tasks/%s/log" % upid)
    for l in log[:4]:
        print("   | " + l["t"])

    step("configure: 2 cores, 4 GiB, cloud-init user and SSH key")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHYoxIQ5i3JkV9B3J4Md4k0iSxqkVnF1Ecb8y2yq6ZJ7 demo@example"
    call("PUT", "/nodes/sv1/qemu/%d/config" % vmid,
         data={"cores": 2, "memory": 4096, "ciuser": "demo", "ipconfig0": "ip=dhcp",
               "sshkeys": urllib.parse.quote(key, safe=""), "tags": "proxd"})
    conf = call("GET", "/nodes/sv1/qemu/%d/config" % vmid)
    print("   cores=%s memory=%s sshkeys=%s..." % (conf["cores"], conf["memory"], conf["sshkeys"][:40]))

    step("grow the boot disk by 10 GiB")
    wait("sv1", call("PUT", "/nodes/sv1/qemu/%d/resize" % vmid, data={"disk": "scsi0", "size": "+10G"}), "resize")
    print("   scsi0 = " + call("GET", "/nodes/sv1/qemu/%d/config" % vmid)["scsi0"])

    for action in ("start", "suspend", "resume", "shutdown"):
        step(action)
        wait("sv1", call("POST", "/nodes/sv1/qemu/%d/status/%s" % (vmid, action)), action)
        st = call("GET", "/nodes/sv1/qemu/%d/status/current" % vmid)
        print("   status=%s qmpstatus=%s" % (st["status"], st["qmpstatus"]))

    step("delete (purge)")
    wait("sv1", call("DELETE", "/nodes/sv1/qemu/%d" % vmid, params={"purge": 1}), "qmdestroy")
    r = s.get(base + "/nodes/sv1/qemu/%d/config" % vmid, verify=False)
    print("   GET config -> HTTP %d %s" % (r.status_code, r.reason))


if __name__ == "__main__":
    sys.exit(main())

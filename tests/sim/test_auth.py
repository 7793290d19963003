"""Authentication rules of pvesim (pve-api.md §3): login, ticket and CSRF
formats, the ways to present credentials, renewal, expiry, API tokens, the
401 shapes and their delay, the token id in task UPIDs, and the ticket key
from a file (--ticket-key: pvesims given one key accept each other's
tickets, as a cluster's nodes share authkey.key)."""
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.parse

from lib.cases import case, finish
from lib.env import PASSWORD, TOKEN_ID, TOKEN_SECRET
from lib.env import PVESIM
from lib.sim import Sim
from lib.wait import wait_for

TICKET_RE = re.compile(r"^PVE:root@pam:[0-9A-F]{8}::[A-Za-z0-9+/=]+$")
CSRF_RE = re.compile(r"^[0-9A-F]{8}:[A-Za-z0-9+/]{43}$")


def login_raw(s, **data):
    return s.raw("POST", "/api2/json/access/ticket", data=data)


def is_401(r, reason):
    """An authentication failure: no JSON, no Content-Type, empty body, closed."""
    assert r.status_code == 401, (r.status_code, r.reason, r.text)
    assert r.reason == reason, (r.reason, reason)
    assert r.text == "" and "Content-Type" not in r.headers, (r.headers, r.text)
    assert r.headers.get("Connection", "").lower() == "close", r.headers


def tok(value):
    return {"Authorization": value}


def cookie(ticket):
    return {"Cookie": "PVEAuthCookie=" + ticket}


@case
def login_and_formats():
    with Sim(time_scale=0.01) as s:
        for data in ({"username": "root@pam", "password": PASSWORD},
                     {"username": "root", "realm": "pam", "password": PASSWORD}):
            r = login_raw(s, **data)
            assert r.status_code == 200, (r.status_code, r.reason)
            d = r.json()["data"]
            assert d["username"] == "root@pam", d
            assert TICKET_RE.match(d["ticket"]), d["ticket"]
            assert CSRF_RE.match(d["CSRFPreventionToken"]), d["CSRFPreventionToken"]
            assert isinstance(d["cap"], dict) and "vms" in d["cap"], d
            # the ticket's time and the CSRF token's time are now (hex unix time)
            t = int(d["ticket"].split(":")[2], 16)
            assert abs(t - time.time()) < 5, t
            assert abs(int(d["CSRFPreventionToken"][:8], 16) - time.time()) < 5
            assert "Set-Cookie" not in r.headers
        # a JSON body works too
        r = s.raw("POST", "/api2/json/access/ticket", json={"username": "root@pam", "password": PASSWORD})
        assert r.status_code == 200 and TICKET_RE.match(r.json()["data"]["ticket"])
        # GET /access/ticket is a dummy
        r = s.raw("GET", "/api2/json/access/ticket")
        assert r.status_code == 200 and r.json() == {"data": None}, r.text


@case
def login_failures():
    with Sim(time_scale=0.01) as s:
        for data in ({"username": "root@pam", "password": "wrong"},
                     {"username": "nobody@pam", "password": PASSWORD},
                     {"username": "root", "realm": "pve", "password": PASSWORD},
                     {"username": "root@pam", "password": ""}):
            r = login_raw(s, **data)
            assert r.status_code == 401 and r.reason == "authentication failure", (data, r.status_code, r.reason)
            assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
            assert r.json() == {"data": None, "message": "authentication failure\n"}, r.text
            assert r.headers["Connection"] == "close"
        # JSON numbers for the strings: read as their text, as Perl reads them
        # (the old pvesim crashed on a numeric username)
        for body in ({"username": 100, "password": "x", "realm": "pam"},
                     {"username": "root", "password": 123, "realm": "pam"},
                     {"username": "root@pam", "password": 1.5}):
            r = s.raw("POST", "/api2/json/access/ticket", json=body)
            assert r.status_code == 401 and r.reason == "authentication failure", (body, r.status_code, r.text)
        # missing password is a parameter error, not an authentication failure
        r = login_raw(s, username="root@pam")
        assert r.status_code == 400 and r.json()["errors"] == {
            "password": "property is missing and it is not optional"}, r.text
        # an API token may not log in
        r = s.raw("POST", "/api2/json/access/ticket", data={"username": "root@pam", "password": PASSWORD},
                  headers=tok("PVEAPIToken=%s=%s" % (TOKEN_ID, TOKEN_SECRET)))
        msg = "Permission check failed (URI '/access/ticket' not available with API token, need proper ticket."
        assert r.status_code == 403 and r.reason == msg, (r.status_code, r.reason)
        assert r.json()["data"] is None


@case
def presenting_a_ticket():
    with Sim(time_scale=0.01) as s:
        d = s.login()
        t, csrf = d["ticket"], d["CSRFPreventionToken"]
        # Cookie, percent-encoded cookie, Authorization: PVEAuthCookie=
        for h in (cookie(t), cookie(urllib.parse.quote(t, safe="")),
                  {"Authorization": "PVEAuthCookie=" + t},
                  {"Cookie": "foo=bar; PVEAuthCookie=" + t + "; x=y"}):
            r = s.api("GET", "/version", headers=h, auth=None)
            assert r.status_code == 200, (h, r.status_code, r.reason)
        # writes need the CSRF token; GETs do not
        cfg = "/nodes/sv1/qemu/8000/config"
        is_401(s.api("PUT", cfg, data={"cores": "3"}, headers=cookie(t), auth=None),
               "Permission denied - invalid csrf token")
        is_401(s.api("PUT", cfg, data={"cores": "3"}, auth=None,
                     headers=dict(cookie(t), CSRFPreventionToken=csrf[:-1] + ("A" if csrf[-1] != "A" else "B"))),
               "Permission denied - invalid csrf token")
        is_401(s.api("DELETE", "/nodes/sv1/qemu/8000", headers={"Authorization": "PVEAuthCookie=" + t}, auth=None),
               "Permission denied - invalid csrf token")
        assert s.data("GET", cfg, auth=d)["cores"] == 2
        r = s.api("PUT", cfg, data={"cores": "3"}, headers=dict(cookie(t), CSRFPreventionToken=csrf), auth=None)
        assert r.status_code == 200, (r.status_code, r.reason)
        r = s.api("PUT", cfg, data={"cores": "4"}, auth=None,
                  headers={"Authorization": "PVEAuthCookie=" + t, "CSRFPreventionToken": csrf})
        assert r.status_code == 200, (r.status_code, r.reason)
        assert s.data("GET", cfg, auth=d)["cores"] == 4
        # a broken ticket; a ticket wins over a token that is also sent
        bad = t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB")
        is_401(s.api("GET", "/version", headers=cookie(bad), auth=None), "permission denied - invalid PVE ticket")
        is_401(s.api("GET", "/version", headers=cookie("garbage"), auth=None), "permission denied - invalid PVE ticket")
        is_401(s.api("GET", "/version", headers=cookie(bad)), "permission denied - invalid PVE ticket")
        # a wrong key name or case is no credential at all
        is_401(s.api("GET", "/version", headers={"Cookie": "pveauthcookie=" + t}, auth=None), "No ticket")
        is_401(s.api("GET", "/version", headers={"Authorization": "Bearer " + t}, auth=None), "No ticket")


@case
def oversized_ticket_signature():
    """A ticket of the current time whose signature is far longer than any
    RSA signature (up to the 2048 characters a ticket may have): refused
    without decoding it, as a cookie and as a renewal password (the old
    pvesim decoded it into a 600-byte stack buffer first, unauthenticated)."""
    with Sim(time_scale=0.01) as s:
        for n in (804, 1600, 2024):
            t = "PVE:root@pam:%08X::" % int(time.time()) + "A" * n
            assert len(t) <= 2048, len(t)
            is_401(s.api("GET", "/version", headers=cookie(t), auth=None),
                   "permission denied - invalid PVE ticket")
            r = login_raw(s, username="root@pam", password=t)
            assert r.status_code == 401 and r.reason == "authentication failure", (n, r.status_code, r.reason)
        # still serving, and a real ticket still works
        assert s.api("GET", "/version", auth=s.login()).status_code == 200


@case
def ticket_key_from_a_file():
    d = tempfile.mkdtemp(prefix="pvesim-tkey-")
    key, bad = os.path.join(d, "authkey.key"), os.path.join(d, "bad.key")
    # 4096 bits, the most a ticket key may have, and just over it (its
    # signature no longer fits: the old pvesim started, then aborted at the
    # first login); made side by side
    k4096, k4104 = os.path.join(d, "4096.key"), os.path.join(d, "4104.key")
    gens = [subprocess.Popen(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                              "rsa_keygen_bits:%d" % bits, "-out", path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for bits, path in ((2048, key), (4096, k4096), (4104, k4104))]
    for g in gens:
        assert g.wait(timeout=120) == 0, g.args
    with open(bad, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    try:
        with Sim(time_scale=0.01, extra=["--ticket-key", key]) as a, \
                Sim(time_scale=0.01, extra=["--ticket-key", key]) as b, \
                Sim(time_scale=0.01) as own:  # the build's key, or one made at start
            t = a.login()
            assert TICKET_RE.match(t["ticket"]), t
            # the same key: b takes a's ticket (and renews it), as a node of a's cluster
            assert b.api("GET", "/version", auth=t).status_code == 200
            assert TICKET_RE.match(b.login(password=t["ticket"])["ticket"])
            # a pvesim with a key of its own does not
            is_401(own.api("GET", "/version", auth=t), "permission denied - invalid PVE ticket")
        with Sim(time_scale=0.01, extra=["--ticket-key", k4096]) as big:
            t = big.login()
            assert TICKET_RE.match(t["ticket"]), t
            assert big.api("GET", "/version", auth=t).status_code == 200
            assert TICKET_RE.match(big.login(password=t["ticket"])["ticket"])
        # a file that is no RSA key, a key too big, or none: pvesim does not
        # start, and says why
        for path, why in ((bad, "--ticket-key %s: not an RSA private key" % bad),
                          (k4104, "--ticket-key %s: not an RSA private key of 2048 to 4096 bits" % k4104),
                          (bad + ".none", "cannot open '%s.none'" % bad)):
            r = subprocess.run([PVESIM, "--listen", "127.0.0.1:0", "--ticket-key", path],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode != 0 and why in r.stderr, (r.returncode, r.stderr)
        h = subprocess.run([PVESIM, "--help"], capture_output=True, text=True, timeout=30)
        assert "--ticket-key FILE" in h.stdout, h.stdout
    finally:
        for p in (key, bad, k4096, k4104):
            if os.path.exists(p):
                os.unlink(p)
        os.rmdir(d)


@case
def renewal():
    with Sim(time_scale=0.01) as s:
        d = s.login()
        n = s.login(password=d["ticket"])
        assert n["username"] == "root@pam" and TICKET_RE.match(n["ticket"])
        assert s.api("GET", "/version", auth=n).status_code == 200
        # a forged ticket does not renew
        r = login_raw(s, username="root@pam", password=d["ticket"][:-4] + "AAAA")
        assert r.status_code == 401 and r.reason == "authentication failure"


@case
def expiry():
    with Sim(time_scale=0.01, extra=["--ticket-lifetime", "2"]) as s:
        d = s.login()
        t0 = time.monotonic()
        assert s.api("GET", "/version", auth=d).status_code == 200

        def refused():
            r = s.api("GET", "/version", auth=d)
            return [r] if r.status_code == 401 else None  # a 401 Response is falsy
        r = wait_for(refused, 8, interval=0.2, what="the ticket to expire")[0]
        assert time.monotonic() - t0 >= 1.0
        is_401(r, "permission denied - invalid PVE ticket")
        # an expired ticket no longer renews; the password still logs in
        r = login_raw(s, username="root@pam", password=d["ticket"])
        assert r.status_code == 401 and r.reason == "authentication failure"
        assert s.api("GET", "/version", auth=s.login()).status_code == 200


@case
def api_tokens():
    with Sim(time_scale=0.01) as s:
        good = "%s=%s" % (TOKEN_ID, TOKEN_SECRET)
        for h in ("PVEAPIToken=" + good, "PVEAPIToken " + good):
            r = s.api("GET", "/version", headers=tok(h), auth=None)
            assert r.status_code == 200, (h, r.status_code, r.reason)
        # tokens need no CSRF token for writes
        r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data={"cores": "3"}, headers=tok("PVEAPIToken=" + good), auth=None)
        assert r.status_code == 200, (r.status_code, r.reason)
        is_401(s.api("GET", "/version", headers=tok("PVEAPIToken=%s=wrong" % TOKEN_ID), auth=None),
               "invalid token value!")
        is_401(s.api("GET", "/version", headers=tok("PVEAPIToken=root@pam!x=" + TOKEN_SECRET), auth=None),
               "no such token 'x' for user 'root@pam'")
        is_401(s.api("GET", "/version", headers=tok("PVEAPIToken=root@pam=" + TOKEN_SECRET), auth=None),
               "'root@pam' is not a valid token ID - not able to split into user and token parts")
        is_401(s.api("GET", "/version", headers=tok("PVEAPIToken=" + TOKEN_ID), auth=None),
               "no tokenid specified")
        # PBS's ':' separator is not PVE's
        is_401(s.api("GET", "/version", headers=tok("PVEAPIToken=%s:%s" % (TOKEN_ID, TOKEN_SECRET)), auth=None),
               "no tokenid specified")


@case
def no_credentials():
    with Sim(time_scale=0.01) as s:
        for m, p in (("GET", "/version"), ("GET", "/nodes"), ("POST", "/nodes/sv1/qemu/8000/clone"),
                     ("GET", "/nodes/sv1/nothing")):
            is_401(s.api(m, p, auth=None), "No ticket")
        # unauthenticated calls that are allowed
        assert s.api("GET", "/access/domains", auth=None).status_code == 200


@case
def auth_delay():
    # Lower bounds in wall time, upper bounds only as ordering or against a
    # whole delay: a loaded machine makes calls slower, never faster.
    with Sim(time_scale=0.01, auth_delay=2) as s:
        refusals = [lambda: s.api("GET", "/version", auth=None),
                    lambda: s.api("GET", "/version", headers=tok("PVEAPIToken=%s=wrong" % TOKEN_ID), auth=None),
                    lambda: s.api("GET", "/version", headers=cookie("PVE:root@pam:00000000::AAAA"), auth=None),
                    lambda: login_raw(s, username="root@pam", password="wrong")]
        got = {}

        def refuse(i):
            t0 = time.monotonic()
            r = refusals[i]()
            got[i] = (r, time.monotonic() - t0, time.monotonic())
        threads = [threading.Thread(target=refuse, args=(i,)) for i in range(len(refusals))]
        for t in threads:
            t.start()
        # while the refusals wait out their delay, a good request is answered
        # at once: not delayed, not queued behind them
        assert s.api("GET", "/version").status_code == 200
        answered = time.monotonic()
        for t in threads:
            t.join()
        for r, el, end in got.values():
            assert r.status_code == 401, r.status_code
            assert el >= 2.0, (r.reason, el)
            assert answered < end, "the good request waited for a refusal"
    with Sim(time_scale=0.01, auth_delay=0) as s:
        # no delay: each refusal far under the default one (3 s)
        for fn in (lambda: s.api("GET", "/version", auth=None),
                   lambda: login_raw(s, username="root@pam", password="wrong")) * 3:
            t0 = time.monotonic()
            assert fn().status_code == 401
            assert time.monotonic() - t0 < 3.0


@case
def task_owner():
    with Sim(time_scale=0.01) as s:
        upid = s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"})
        assert upid.endswith(":qmclone:8000:%s:" % TOKEN_ID), upid
        st = s.wait_task("sv1", upid)
        assert st["user"] == "root@pam" and st["tokenid"] == "ci", st
        lst = s.data("GET", "/nodes/sv1/tasks")
        e = [t for t in lst if t["upid"] == upid][0]
        assert e["user"] == TOKEN_ID, e
        d = s.login()
        upid = s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "101"}, auth=d)
        assert upid.endswith(":qmclone:8000:root@pam:"), upid
        st = s.wait_task("sv1", upid)
        assert st["user"] == "root@pam" and "tokenid" not in st, st


finish()

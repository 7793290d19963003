"""How pvesim reads what a request carries, as PVE's http-server does: form
bodies and query strings split and decoded as decode_urlencoded does (Perl's
split, undef for a bare key, Encode's lax UTF-8 with U+FFFD), JSON bodies as
extract_params decodes them (500 for what decode_json or Perl's strict refs
refuse, the last of duplicate keys), the ticket and token a request
presents as extract_auth_value finds them, and --seed refused when it does
not fit."""
import subprocess

from lib.cases import case, finish
from lib.env import PVESIM, TOKEN_ID, TOKEN_SECRET
from lib.sim import Sim

AUTH = "PVEAPIToken=%s=%s" % (TOKEN_ID, TOKEN_SECRET)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"
AT_HTTP = " at /usr/share/perl5/PVE/APIServer/AnyEvent.pm line "


def status(r, code, reason=None):
    assert r.status_code == code, (r.status_code, r.reason, r.text[:300])
    if reason is not None:
        assert r.reason == reason, (r.reason, reason)


def param_errors(r):
    status(r, 400, "Parameter verification failed.")
    return r.json()["errors"]


def http_error(r, code, reason, nl=True):
    """An error of the HTTP layer: no JSON, the message as the body (with
    the newline of a die in handle_api2_request's eval)."""
    status(r, code, reason)
    assert "Content-Type" not in r.headers, r.headers
    assert r.text == reason + ("\n" if nl else ""), (r.text, reason)


def description(s, vmid=8000):
    return s.data("GET", "/nodes/sv1/qemu/%d/config" % vmid).get("description")


@case
def form_pairs_split_as_perl_does():
    with Sim(nodes="sv1,sv2") as s:
        def put(body):
            return s.api("PUT", "/nodes/sv1/qemu/8000/config", data=body, headers=FORM)

        # split(/=/, $kv) into ($k, $v): "a=b=c" is a => "b", the rest is lost
        status(put("description=one=two=three"), 200)
        assert description(s) == "one", description(s)
        # a trailing empty pair is dropped by Perl's split...
        status(put("description=x&"), 200)
        assert description(s) == "x"
        # ...one before a pair is the key "" (undef), which no method takes
        # (add_error names a false path "_root")
        for body in ("&description=y", "cores=2&&description=y", "=y&description=y"):
            assert param_errors(put(body)) == {"_root": UNKNOWN}, body
        assert description(s) == "x"
        # "" and "0" are Perl's false: no parameters at all
        assert s.data("GET", "/version?0")["version"] == "9.1.3"
        # a bare key in a query is undef: as if absent (not "", which the
        # enumeration would refuse); the last of a key decides
        kinds = {e["type"] for e in s.data("GET", "/cluster/resources?type")}
        assert {"node", "qemu", "storage"} <= kinds, kinds
        kinds = {e["type"] for e in s.data("GET", "/cluster/resources?type=vm&type")}
        assert "node" in kinds, kinds
        kinds = {e["type"] for e in s.data("GET", "/cluster/resources?type&type=node")}
        assert kinds == {"node"}, kinds
        assert param_errors(s.api("GET", "/cluster/resources?type="))["type"].startswith(
            "value '' does not have a value in the enumeration")
        assert param_errors(s.api("GET", "/cluster/resources?=1")) == {"_root": UNKNOWN}
        # a bare key in the body of a protected method reaches pvedaemon as
        # "a=" (proxy_request encodes undef as ""): the empty string's check
        assert param_errors(put("cores"))["cores"] == "type check ('integer') failed - got ''"


@case
def non_utf8_values_become_replacement_characters():
    with Sim(nodes="sv1,sv2") as s:
        def put(body):
            return s.api("PUT", "/nodes/sv1/qemu/8000/config", data=body, headers=FORM)

        for enc, want in (("caf%E9", "caf\ufffd"),            # Latin-1
                          ("%FF%FE", "\ufffd\ufffd"),          # a byte each
                          ("x%E2%82y", "x\ufffdy"),            # cut short: one
                          ("%C0%80", "\ufffd"),                # overlong: one
                          ("%E2%82%AC%C3%A9", "\u20ac\u00e9"),  # fine as it is
                          ("a+b%2Bc", "a b+c")):
            status(put("description=" + enc), 200)
            assert description(s) == want, (enc, description(s), want)
        # a key is not decoded as UTF-8: its bytes are Latin-1 characters
        assert param_errors(put("k%FF=1")) == {"k\u00ff": UNKNOWN}


@case
def json_bodies_as_extract_params_decodes_them():
    with Sim(nodes="sv1,sv2") as s:
        def send(body, path="/nodes/sv1/qemu/8000/config", method="PUT"):
            return s.api(method, path, data=body, headers=JSON)

        # duplicate keys: the last wins (JSON::XS)
        status(send('{"description": "first", "description": "last"}'), 200)
        assert description(s) == "last"
        # what decode_json refuses: 500 from the HTTP layer, even for a path
        # without a handler (the body is decoded before the lookup)
        for body, path in (('{"description": ', "/nodes/sv1/qemu/8000/config"),
                           ("{bad", "/nodes/sv1/nothing/here")):
            r = send(body, path)
            assert r.status_code == 500 and r.reason.startswith("malformed JSON string, "), \
                (r.status_code, r.reason)
            assert r.reason.endswith(AT_HTTP + "934."), r.reason
            http_error(r, 500, r.reason)
        http_error(send(""), 500, "malformed JSON string, neither tag, array, object, number, "
                   "string or atom, at character offset 0 (before \"(end of string)\")"
                   + AT_HTTP + "934.")
        # not an object: Perl's strict refs refuse it as a hash
        for body in ("[1, 2]", "true"):
            http_error(send(body), 500, "Not a HASH reference" + AT_HTTP + "978.")
        http_error(send('"%s"' % ("x" * 40)), 500, "Can't use string (\"%s\"...) as a HASH "
                   "ref while \"strict refs\" in use at /usr/share/perl5/PVE/APIServer/"
                   "AnyEvent.pm line 978." % ("x" * 32))
        http_error(send("12"), 500, "Can't use string (\"12\") as a HASH ref while \"strict "
                   "refs\" in use" + AT_HTTP + "978.")
        # a false one passes that `if $params` and fails in rest_handler: a
        # handler's error, with a JSON body
        r = send('"0"')
        msg = ("Can't use string (\"0\") as a HASH ref while \"strict refs\" in use at "
               "/usr/share/perl5/PVE/HTTPServer.pm line 160.")
        status(r, 500, msg)
        assert r.json() == {"data": None, "message": msg + "\n"}, r.text
        # null: no parameters
        r = send("null", "/nodes/sv1/qemu/8000/clone", "POST")
        assert param_errors(r) == {"newid": "property is missing and it is not optional"}
        assert description(s) == "last"


@case
def tickets_and_tokens_as_pve_finds_them():
    with Sim(nodes="sv1,sv2") as s:
        login = s.login()
        ticket = login["ticket"]

        def call(method, path, cookie=None, authorization=None, **kw):
            h = {}
            if cookie is not None:
                h["Cookie"] = cookie
            if authorization is not None:
                h["Authorization"] = authorization
            return s.raw(method, "/api2/json" + path, headers=h, **kw)

        # an empty or "0" cookie is no ticket: the token is used
        for cookie in ("PVEAuthCookie=", "PVEAuthCookie=0", "PVEAuthCookie=%30",
                       "PVEAuthCookie=; other=1"):
            status(call("GET", "/version", cookie, AUTH), 200)
            status(call("GET", "/version", cookie), 401, "No ticket")
        # the cookie's key must follow white space, not a bare ';'
        status(call("GET", "/version", "a=1;PVEAuthCookie=" + ticket), 401, "No ticket")
        status(call("GET", "/version", "a=1; PVEAuthCookie=" + ticket), 200)
        # beside a ticket a token header is not looked at: a method that
        # takes no token (allowtoken 0) is fine with the ticket
        login_form = {"username": "root@pam", "password": ticket}
        status(call("POST", "/access/ticket", "PVEAuthCookie=" + ticket, AUTH,
                    data=login_form), 200)
        # with no ticket it is the token's call, refused there
        status(call("POST", "/access/ticket", None, AUTH, data=login_form), 403)
        # "PVEAPIToken" not at the start or after white space is no token
        status(call("POST", "/access/ticket", None, "x" + AUTH, data=login_form), 200)


@case
def body_and_format_checks_follow_the_login():
    # authenticate_and_handle_request checks the credentials first, then the
    # body (501 / 506), then handle_api2_request the format (501)
    with Sim(nodes="sv1") as s:
        for method, path, body, ct in (("GET", "/api2/xml/version", None, None),
                                       ("GET", "/api2/json/version", "x=1", FORM["Content-Type"]),
                                       ("PUT", "/api2/json/nodes/sv1/qemu/8000/config", "cores=3",
                                        "text/plain")):
            h = {"Content-Type": ct} if ct else {}
            status(s.raw(method, path, data=body, headers=h), 401, "No ticket")
            h["Authorization"] = AUTH
            assert s.raw(method, path, data=body, headers=h).status_code in (501, 506)
        # the type is compared as it is, and all of the header is named
        r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data="cores=3",
                  headers={"Content-Type": "Application/JSON; charset=utf-8"})
        http_error(r, 506, "upload 'Content-Type 'Application/JSON; charset=utf-8' not "
                   "implemented", nl=False)


@case
def a_request_that_stalls_5s_is_dropped():
    # AnyEvent::Handle's timeout (5 s without a byte) holds within a request
    # too: the connection is closed without an answer
    import socket
    import ssl
    import time
    with Sim(nodes="sv1") as s:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def connect():
            sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", s.entry), timeout=15))
            sock.sendall(b"GET /api2/json/version HTTP/1.1\r\nHost: x\r\n")
            return sock

        # bytes 3 s apart keep it alive
        sock = connect()
        for line in (b"Connection: close\r\n", b"Authorization: " + AUTH.encode() + b"\r\n",
                     b"\r\n"):
            time.sleep(3)
            sock.sendall(line)
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
        sock.close()
        # 5 s of silence does not
        sock = connect()
        t0 = time.monotonic()
        try:
            out = sock.recv(100)
        except (OSError, ssl.SSLError):
            out = b""
        took = time.monotonic() - t0
        sock.close()
        assert out == b"" and 4 < took < 8, (out, took)


@case
def seed_that_does_not_fit_is_refused():
    for bad in ("18446744073709551616", "99999999999999999999999", "-1", "+5", " 5", ""):
        p = subprocess.run([PVESIM, "--listen", "127.0.0.1:0", "--nodes", "sv1",
                            "--seed", bad], capture_output=True, text=True, timeout=20)
        assert p.returncode != 0, (bad, p.returncode)
        assert "--seed must be an integer from 0 to 18446744073709551615" in p.stderr, \
            (bad, p.stderr)
    with Sim(nodes="sv1", extra=["--seed", "18446744073709551615"]) as s:
        assert s.data("GET", "/version")["version"] == "9.1.3"


finish()

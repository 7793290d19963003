"""pvesim's bundled API schema (data/pve-apidoc): the committed compact files
are what scripts/gen-apidoc.py makes from an apidoc document, they keep no
prose, and pvesim answers the same whether it loads them (the default) or a
full apidoc document with `--schema FILE`.

The full document used here is rebuilt from the committed data (tree of
nodes, descriptions, typetext, text/leaf added back), so the test needs
nothing outside the repository. With PVE_APIDOC_DIR set to a folder holding
the official pve-docs-VERSION.apidoc.json files, it also checks that
regenerating from them gives the committed bytes and that SOURCES.md names
their sha256."""
import hashlib
import json
import os
import re
import subprocess
import tempfile

from lib.cases import case, finish
from lib.sim import Sim

SRC = os.environ.get("SRC_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(SRC, "data", "pve-apidoc")
GEN = os.path.join(SRC, "scripts", "gen-apidoc.py")
VERSIONS = {"8.4.2": 605, "9.1.3": 649}
PROSE = {"description", "verbose_description", "format_description", "typetext", "title",
         "renderer", "links", "default"}


def load(v):
    with open(os.path.join(DATA, "pve-%s.schema.json" % v)) as f:
        return json.load(f)


def prose_in(schema, where, found):
    """Prose keys at schema level (not property names inside `properties`)."""
    if isinstance(schema, dict):
        for k, x in schema.items():
            if k in ("properties", "format") and isinstance(x, dict):
                for name, p in x.items():
                    prose_in(p, where + "." + name, found)
            elif k in PROSE:
                found.append(where + ":" + k)
            else:
                prose_in(x, where + "/" + k, found)
    elif isinstance(schema, list):
        for i, x in enumerate(schema):
            prose_in(x, "%s[%d]" % (where, i), found)


def to_full(nodes):
    """An apidoc document as pve-docs ships it: a tree, with prose."""
    def dress(s):
        if isinstance(s, dict):
            d = {}
            for k, x in s.items():
                if k in ("properties", "format") and isinstance(x, dict):
                    d[k] = {n: dress(p) for n, p in x.items()}
                else:
                    d[k] = dress(x)
            if "type" in d:
                d["description"] = "Some text about it."
                d["typetext"] = "<string>"
            return d
        if isinstance(s, list):
            return [dress(x) for x in s]
        return s
    byp, roots = {}, []
    for n in nodes:
        full = {"path": n["path"], "text": n["path"].rsplit("/", 1)[-1], "leaf": 1}
        if "info" in n:
            full["info"] = {verb: dict(dress(m), description="What it does.",
                                       **({"permissions": dict(m["permissions"],
                                                               description="Who may call it.")}
                                          if "permissions" in m else {}))
                            for verb, m in n["info"].items()}
        byp[n["path"]] = full
        parent = byp.get(n["path"].rsplit("/", 1)[0])
        if parent is None:
            roots.append(full)
        else:
            parent["leaf"] = 0
            parent.setdefault("children", []).append(full)
    return roots


@case
def committed_files_are_compact_and_complete():
    notes = open(os.path.join(DATA, "SOURCES.md")).read()
    for v, methods in VERSIONS.items():
        nodes = load(v)
        assert sum(len(n.get("info", {})) for n in nodes) == methods, v
        found = []
        for n in nodes:
            assert set(n) <= {"path", "info"}, n.keys()
            for verb, m in n.get("info", {}).items():
                assert set(m) <= {"method", "name", "protected", "proxyto", "allowtoken",
                                  "permissions", "parameters", "returns"}, (n["path"], verb, m.keys())
                # the permissions pvesim evaluates: the check and `user`, no prose
                assert set(m.get("permissions", {})) <= {"check", "user"}, (n["path"], verb)
                prose_in(m, n["path"] + " " + verb, found)
        assert found == [], found[:5]
        # names are not prose: a parameter called `description` stays
        cfg = next(n for n in nodes if n["path"] == "/nodes/{node}/qemu/{vmid}/config")
        assert "description" in cfg["info"]["PUT"]["parameters"]["properties"]
        clone = next(n for n in nodes if n["path"] == "/nodes/{node}/qemu/{vmid}/clone")
        assert clone["info"]["POST"]["permissions"]["check"][0] == "and", clone
        assert "| pve-%s.schema.json | %s | pve-docs-%s.apidoc.json |" % (v, v, v) in notes
        size = os.path.getsize(os.path.join(DATA, "pve-%s.schema.json" % v))
        assert size < 1024 * 1024, size  # a quarter of the source; stays reviewable


@case
def regenerating_from_a_full_document_gives_the_committed_bytes():
    with tempfile.TemporaryDirectory() as tmp:
        for v in VERSIONS:
            src = os.path.join(tmp, "pve-docs-%s.apidoc.json" % v)
            with open(src, "w") as f:
                json.dump(to_full(load(v)), f, indent=1)
            subprocess.run(["/usr/bin/python3", GEN, src, v, tmp], check=True, stdout=subprocess.DEVNULL)
            a = open(os.path.join(tmp, "pve-%s.schema.json" % v), "rb").read()
            b = open(os.path.join(DATA, "pve-%s.schema.json" % v), "rb").read()
            assert a == b, v
        assert "pve-docs-9.1.3.apidoc.json" in open(os.path.join(tmp, "SOURCES.md")).read()


@case
def official_sources_match_the_notes_when_given():
    src_dir = os.environ.get("PVE_APIDOC_DIR")
    if not src_dir:
        print("     (PVE_APIDOC_DIR unset: the official files are not part of the repository)")
        return
    notes = open(os.path.join(DATA, "SOURCES.md")).read()
    with tempfile.TemporaryDirectory() as tmp:
        for v in VERSIONS:
            src = os.path.join(src_dir, "pve-docs-%s.apidoc.json" % v)
            digest = hashlib.sha256(open(src, "rb").read()).hexdigest()
            assert digest in notes, (v, digest)
            subprocess.run(["/usr/bin/python3", GEN, src, v, tmp], check=True, stdout=subprocess.DEVNULL)
            assert open(os.path.join(tmp, "pve-%s.schema.json" % v), "rb").read() == \
                open(os.path.join(DATA, "pve-%s.schema.json" % v), "rb").read(), v


PROBES = [  # (method, path, form): routing, verification, unknown paths
    ("GET", "/nodes/sv1/qemu", None),
    ("GET", "/nodes/sv1/qemu/8000/config", None),
    ("PUT", "/nodes/sv1/qemu/8000/config", {"cores": "x", "net0": "bogus", "nosuch": "1"}),
    ("POST", "/nodes/sv1/qemu/8000/clone", {"newid": "5", "name": "a_b"}),
    ("POST", "/nodes/sv1/qemu/8000/resize", {"disk": "scsi0", "size": "+1Q"}),
    ("GET", "/cluster/resources", {"type": "vmx"}),
    ("GET", "/nodes/sv1/nosuch", None),
    ("PATCH", "/version", None),
    ("DELETE", "/version", None),
]


def answers(extra, version):
    out = []
    with Sim(nodes="sv1,sv2", pve_version=version, extra=extra) as s:
        for method, path, form in PROBES:
            r = s.api(method, path, data=form if method != "GET" else None,
                      params=form if method == "GET" else None)
            # MAC addresses (and so digests) are random per start
            text = re.sub(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}|[0-9a-f]{40}", "X", r.text)
            out.append((method, path, r.status_code, r.reason, text))
        s.ctl("DELETE", "/rejections")
    return out


@case
def pvesim_answers_the_same_from_a_full_apidoc_file():
    with tempfile.TemporaryDirectory() as tmp:
        for v, pv in (("9.1.3", 9), ("8.4.2", 8)):
            full = os.path.join(tmp, "full-%s.json" % v)
            with open(full, "w") as f:
                json.dump(to_full(load(v)), f)
            a = answers([], pv)
            b = answers(["--schema", full], pv)
            assert a == b, [(x, y) for x, y in zip(a, b) if x != y]
            assert a[2][2] == 400 and "nosuch" in a[2][4] and a[6][2] == 501, a


finish()

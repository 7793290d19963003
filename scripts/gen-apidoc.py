#!/usr/bin/python3
"""Derive pvesim's compact API schema from the official pve-docs apidoc JSON.

    scripts/gen-apidoc.py SRC.apidoc.json VERSION [OUTDIR]

writes OUTDIR/pve-VERSION.schema.json (OUTDIR defaults to data/pve-apidoc)
and records the source's name, size and sha256 in OUTDIR/SOURCES.md.

The result is still an apidoc document (an array of path nodes with `path`
and `info` per verb), so pvesim's loader reads it and a full apidoc file
alike. Kept: what routing, parameter verification and `returns` checks use
(paths, verbs, name, protected, proxyto, allowtoken; permissions: its
`check` expression and `user`, which pvesim evaluates; in schemas type,
optional, enum, pattern, format, minimum/maximum, minLength/maxLength,
properties, items, additionalProperties, requires, alias, default_key,
keyAlias, oneOf, instance-types, type-property, ...). Dropped: prose
(description, verbose_description, format_description, typetext, title),
presentation (renderer, links, text, leaf), the permissions' `description`
and `default`
(documentation only: PVE does not inject defaults). The tree is flattened
to one node per line, in the source's order. Python 3 standard library only.
"""
import hashlib
import json
import os
import sys

DROP = {"description", "verbose_description", "format_description", "typetext", "title",
        "renderer", "links", "default"}
INFO_KEEP = ("method", "name", "protected", "proxyto", "allowtoken", "permissions", "parameters",
             "returns")
PERM_KEEP = ("check", "user")


def keep(k, v):
    """One kept member of a method's info."""
    if k in ("parameters", "returns"):
        return strip(v)
    if k == "permissions":
        return {p: v[p] for p in PERM_KEEP if p in v}
    return v


def strip(v):
    """A schema value without prose; keys in the source's order. The keys of
    `properties` and of a property-string `format` are names (a parameter may
    be called `description`), kept with their schemas stripped."""
    if isinstance(v, dict):
        return {k: ({n: strip(p) for n, p in x.items()}
                    if k in ("properties", "format") and isinstance(x, dict) else strip(x))
                for k, x in v.items() if k not in DROP}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def flatten(nodes, out):
    for n in nodes:
        node = {"path": n["path"]}
        info = n.get("info")
        if info is not None:
            node["info"] = {verb: {k: keep(k, m[k]) for k in INFO_KEEP if k in m}
                            for verb, m in info.items()}
        out.append(node)
        flatten(n.get("children", []), out)
    return out


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    src, version = sys.argv[1], sys.argv[2]
    outdir = sys.argv[3] if len(sys.argv) == 4 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "data", "pve-apidoc")
    raw = open(src, "rb").read()
    nodes = flatten(json.loads(raw), [])
    dst = os.path.join(outdir, "pve-%s.schema.json" % version)
    with open(dst + ".tmp", "w") as f:
        f.write("[\n")
        f.write(",\n".join(json.dumps(n, separators=(",", ":"), ensure_ascii=False) for n in nodes))
        f.write("\n]\n")
    os.replace(dst + ".tmp", dst)
    note = os.path.join(outdir, "SOURCES.md")
    lines = open(note).read().splitlines() if os.path.exists(note) else []
    head = ["# pvesim's API schema data",
            "",
            "Derived by `scripts/gen-apidoc.py` from the official pve-docs apidoc JSON",
            "(descriptions and other prose dropped; see the script). Regenerate with",
            "`scripts/gen-apidoc.py SRC.apidoc.json VERSION` and commit the result.",
            "",
            "| file | PVE version | source file | source bytes | source sha256 |",
            "|---|---|---|---|---|"]
    rows = [l for l in lines if l.startswith("| pve-") and not l.startswith("| pve-%s." % version)]
    rows.append("| pve-%s.schema.json | %s | %s | %d | %s |" % (
        version, version, os.path.basename(src), len(raw), hashlib.sha256(raw).hexdigest()))
    with open(note, "w") as f:
        f.write("\n".join(head + sorted(rows)) + "\n")
    print("%s: %d paths, %d methods, %d bytes" % (
        dst, len(nodes), sum(len(n.get("info", {})) for n in nodes), os.path.getsize(dst)))


if __name__ == "__main__":
    main()

"""pvesim fault rules the randomized tests share."""


def fault_rules(rate):
    """Rules whose draws add up to about `rate` of the calls of each method,
    every kind on every path (pvesim tries them in order, each with its own
    draw, so the later rules' rates are raised by what the earlier ones
    took). Reads get the kinds that apply to them (no lock timeouts or
    failing tasks: they start none)."""
    kinds = {"GET": [("error", 0.45), ("596", 0.20), ("delay", 0.25), ("hang", 0.10)],
             "write": [("error", 0.25), ("lock_timeout", 0.15), ("596", 0.10),
                       ("task_error", 0.30), ("delay", 0.15), ("hang", 0.05)]}
    rules = []
    for method in ("GET", "POST", "PUT", "DELETE"):
        left = 1.0
        for kind, share in kinds["GET" if method == "GET" else "write"]:
            p = rate * share
            r = {"kind": kind, "method": method, "path": "^/(nodes|cluster)/",
                 "rate": min(1.0, p / left)}
            left -= p
            if kind == "delay":
                r["delay_ms"] = 400
            if kind == "task_error":
                r["message"] = "injected task failure"
            rules.append(r)
    return rules

"""pvesim fault rules the tests share: a mix of random faults of every kind
(fault_mix), the randomized tests' rules for every method (fault_rules), and
for a client logged in with a password, those of its logins and tickets
(ticket_fault_rules). Add them with Sim.add_faults; Sim.clear_faults removes
them."""

# A mix of random faults: each kind a Proxmox call can meet, and its share
# of the failing calls.
# A dropped answer (the call served, the answer lost) is the one a client
# cannot tell from a call that never arrived: it must look before asking
# again, and must know its own work when it finds it. A late one (no
# answer, the call served after the client looked and maybe asked again)
# must not be counted twice nor be taken for another's. A late one whose
# connection hangs (late_hang) is served after the client's call timed out.
FAULT_MIX = (("error", 0.27), ("lock_timeout", 0.18), ("596", 0.15), ("task_error", 0.15),
             ("delay", 0.10), ("drop", 0.10), ("late", 0.05))
# the randomized tests' kinds of faults, and their shares, of reads and of
# writes: reads get the kinds that apply to them (no lock timeouts or
# failing tasks: they start none)
READS = (("error", 0.40), ("596", 0.20), ("delay", 0.20), ("hang", 0.10), ("drop", 0.10))
WRITES = (("error", 0.17), ("lock_timeout", 0.15), ("596", 0.06), ("served_596", 0.04),
          ("task_error", 0.22), ("delay", 0.10), ("hang", 0.05), ("drop", 0.10), ("late", 0.08),
          ("late_hang", 0.03))


def fault_mix(rate, path="^/nodes/", mix=FAULT_MIX, method=None, delay_ms=300,
              message="injected fault"):
    """pvesim fault rules that make about `rate` of the calls on `path`
    fail, shared among the kinds of `mix` ((kind, share) pairs). pvesim
    tries the rules in order, each with a draw of its own, so each rule's
    rate is raised by what the ones before it took. method: the rules'
    method, None for every method but task_error's (POST: the calls that
    start tasks); message: the text of the errors and failing tasks;
    delay_ms: a delay's length. Seeded by pvesim's --seed."""
    rules, left = [], 1.0
    for kind, share in mix:
        p = rate * share
        r = {"kind": kind, "path": path, "rate": min(1.0, p / left)}
        left -= p
        if method or kind == "task_error":
            r["method"] = method or "POST"
        if kind in ("error", "task_error"):
            r["message"] = message
        if kind == "error":
            r["status"] = 500
        if kind == "delay":
            r["delay_ms"] = delay_ms
        if kind == "late":  # after the client looked and maybe sent it again
            r["delay_ms"] = 2 * delay_ms
        if kind == "late_hang":  # after the client's call timed out (the tests': 3 s)
            r["delay_ms"] = 10 * delay_ms
        rules.append(r)
    return rules


def fault_rules(rate):
    """About `rate` of the calls of each method fail, every kind on every
    path under /nodes and /cluster."""
    rules = []
    for method in ("GET", "POST", "PUT", "DELETE"):
        rules += fault_mix(rate, "^/(nodes|cluster)/", READS if method == "GET" else WRITES,
                           method=method, delay_ms=400, message="injected fault")
    return rules


# The kinds of faults of POST /access/ticket (a login with the password, or
# a renewal with the ticket), and their shares: a 500, a refusal (401 after
# PVE's 3 s, here at once: an LDAP realm briefly away), a hang, a delay
# past a renewal's 1 s glance, an answer dropped or sent nowhere (the
# ticket made, and never received), one served after the client timed out.
LOGINS = (("error", 0.30), ("refused", 0.10), ("hang", 0.15), ("delay", 0.20), ("drop", 0.10),
          ("late", 0.10), ("late_hang", 0.05))
TICKET_REFUSED = "permission denied - invalid PVE ticket"


def ticket_fault_rules(rate, login_rate):
    """For a client logged in with a password: about `rate` of its calls
    under /nodes and /cluster refused with PVE's 401 for a ticket it no
    longer takes ("permission denied - invalid PVE ticket": not served, the
    client logs in again once and sends the call again), and about
    `login_rate` of its logins and renewals (POST /access/ticket) failing,
    each kind of LOGINS. Put before fault_rules' (pvesim takes the first
    rule whose draw hits)."""
    rules = [{"kind": "error", "path": "^/(nodes|cluster)/", "rate": rate, "status": 401,
              "message": TICKET_REFUSED}]
    for r in fault_mix(login_rate, "^/access/ticket$", LOGINS, method="POST", delay_ms=1500,
                       message="injected fault"):
        if r["kind"] == "refused":
            r.update(kind="error", status=401, message="authentication failure")
        if r["kind"] == "late_hang":  # served after the client's 3 s
            r["delay_ms"] = 5000
        rules.append(r)
    return rules

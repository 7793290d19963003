"""Helpers for the tests that drive pvesim through proxmoxer."""
import proxmoxer
from proxmoxer.core import ResourceException

from lib.env import PASSWORD
from lib.wait import wait_for


def expect_error(fn, status, reason):
    """fn() must fail with HTTP `status` and exactly `reason` (PVE's words);
    returns the exception."""
    try:
        fn()
    except ResourceException as e:
        assert e.status_code == status, (e.status_code, str(e))
        assert e.content == reason, (e.content, reason)
        return e
    raise AssertionError("no error raised, expected %d %s" % (status, reason))


def client(s):
    """A proxmoxer client of Sim `s`'s entry node, as root@pam."""
    return proxmoxer.ProxmoxAPI(host="127.0.0.1", port=s.entry, user="root@pam",
                                password=PASSWORD, verify_ssl=False)


def wait_task(px, upid, deadline=20.0):
    """The task's status once it stopped, asked of the node in its UPID."""
    node = upid.split(":")[1]

    def done():
        st = px.nodes(node).tasks(upid).status.get()
        return st if st["status"] == "stopped" else None
    return wait_for(done, deadline, interval=0.02, what="task " + upid)


def task_ok(px, upid):
    """Wait for the task; it must end OK (its log in the message if not)."""
    st = wait_task(px, upid)
    assert st["exitstatus"] == "OK", (st, px.nodes(st["node"]).tasks(upid).log.get())
    return st

"""Helpers for the tests that drive pvesim through proxmoxer."""
from proxmoxer.core import ResourceException


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

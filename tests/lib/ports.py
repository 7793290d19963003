"""Free TCP ports on 127.0.0.1. Best effort: another program may take a port
between the probe and our bind, so whoever binds must be ready to try again
(lib.sim and lib.pg do)."""
import socket


def free_port():
    """One port the kernel just handed out (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _bindable(port):
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        t.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        t.close()


def free_port_block(n):
    """A base port such that base..base+n-1 are all free (pvesim listens on a
    block: the entry, one port per node, the control port)."""
    for _ in range(200):
        base = free_port()
        if base + n >= 65000:
            continue
        if all(_bindable(p) for p in range(base, base + n)):
            return base
    raise RuntimeError("no free port block")

"""Raw sockets in tests that speak HTTP by hand."""


def recv_to_close(s):
    """Everything the peer sends until it closes (the socket's own timeout
    bounds each read)."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk

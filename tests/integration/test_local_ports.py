"""`free_port` says a port is free exactly when a server could listen on it: not while something
listens there, but yes while only old connections linger in TIME_WAIT (a quick restart)."""

from __future__ import annotations

import socket

from medevents.local import free_port


def test_listening_port_is_taken_and_time_wait_port_is_free() -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert free_port(port) != port, "a listening port is not free"

    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection enters TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    assert free_port(port) == port, "TIME_WAIT after a restart must not block the port"

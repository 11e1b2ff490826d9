"""Ports for servers that listen on TCP and UDP at once (Python 3 stdlib only).

harness.free_port() checks only TCP. A DNS server (pebble-challtestsrv) or an HTTP/3 site (Caddy)
also binds the UDP twin of its port, so tests that start one take the port from here.
"""

import socket

import harness


def tcp_and_udp_port():
    """A harness.free_port() (free for TCP on 127.0.0.1, never 2024, never handed out twice)
    that is also free for UDP on 127.0.0.1 a moment ago."""
    for _ in range(50):
        port = harness.free_port()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((harness.LOOPBACK, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no port free for both TCP and UDP")

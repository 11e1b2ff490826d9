#!/usr/bin/env python3
"""Writes the seed inputs of the cluster parsers' fuzz target (fuzz/cluster_fuzz.cc).

    python3 fuzz/corpus/cluster_make_seeds.py        # -> fuzz/corpus/cluster/

Each seed is one selector byte (0 request head, 1 host:port, 2 address/CIDR, 3 push bundle,
4 sealed body) followed by that parser's input. Sealed bodies cannot be made here (no AES-GCM
in the standard library); those seeds only carry the right magic and lengths.
"""
import base64
import hashlib
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cluster")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bundle(files, version=7, controller="ctl-1", caddyfile="example.com {\n\trespond ok\n}\n"):
    return json.dumps({"version": version, "controller": controller, "caddyfile": caddyfile,
                       "files": [{"path": p, "mode": m, "data": b64url(d)} for p, m, d in files]})


HEADS = [
    "GET /health HTTP/1.1\r\nHost: 10.0.0.2:2020\r\n\r\n",
    "POST /cluster/push HTTP/1.1\r\nHost: 10.0.0.2:2019\r\nContent-Type: application/octet-stream"
    "\r\nContent-Length: 1234\r\nConnection: close\r\n\r\n",
    "PUT /x?y=1 HTTP/1.0\r\ncontent-length:0\r\nX-A: \t a b \t\r\n\r\n",
    "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n",
    "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
]
HOSTS = ["10.0.0.2:2019", "[fd00::2]:2019", "gw-server:80", "host:65535", "[::1]:0", "a:b:c"]
CIDRS = [
    "10.0.1.7\n10.0.0.0/16",
    "10.0.1.7\n10.0.1.0/24",
    "192.168.1.1\n192.168.1.1/32",
    "fd00::5\nfd00::/64",
    "::ffff:10.0.0.1\n10.0.0.0/8",
    "10.0.0.1\n10.0.0.0/33",
    "172.18.0.4",
    "fe80::1",
]
BUNDLES = [
    bundle([]),
    bundle([
        ("acme/challenge_tokens/example.com.json", 0o644, b'{"token":"abc"}'),
        ("certificates/acme-v02.api.letsencrypt.org-directory/example.com/example.com.crt",
         0o644, b"-----BEGIN CERTIFICATE-----\n"),
        ("certificates/acme-v02.api.letsencrypt.org-directory/example.com/example.com.key",
         0o600, b"-----BEGIN EC PRIVATE KEY-----\n"),
    ]),
    bundle([("certificates/../../etc/passwd", 0o644, b"x")]),
    bundle([("certificates/a/.hidden", 0o600, b"")]),
    bundle([("acme/challenge_tokens/a", 0o755, b"")]),
    bundle([], controller=5),
]
SEALED = [
    b"\x10/cluster/push\x00\x00\x00" + b"HSP1" + bytes(12) + b"plain" + bytes(16),
    b"\x00" + b"HSP1" + bytes(28),
    b"\x05abcdeHSP2" + bytes(40),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = [b"\x00" + h.encode() for h in HEADS]
    seeds += [b"\x01" + h.encode() for h in HOSTS]
    seeds += [b"\x02" + c.encode() for c in CIDRS]
    seeds += [b"\x03" + b.encode() for b in BUNDLES]
    seeds += [b"\x04" + s for s in SEALED]
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(seed)
    print(f"{len(seeds)} seeds in {OUT}")


if __name__ == "__main__":
    main()

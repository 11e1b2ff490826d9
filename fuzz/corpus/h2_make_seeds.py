#!/usr/bin/env python3
"""Writes the seed inputs of the HTTP/2 codec fuzz targets (fuzz/h2_{server,client}_fuzz.cc).

    python3 fuzz/corpus/h2_make_seeds.py        # -> fuzz/corpus/h2_server/, fuzz/corpus/h2_client/

Frames are built here byte by byte (RFC 9113 §4.1, HPACK RFC 7541 static-table indexes and
literals without Huffman), so the seeds need nothing but python3: python3-h2 is in
scripts/install-deps.sh but was not installed on the machine the seeds were made on. Each seed is
what the peer sends after its preface (the targets write the client magic / the server's first
SETTINGS themselves) followed by the targets' 8 configuration bytes (settings choice, decision
seed, chunk count, shutdown chunk).
"""
import os
import struct

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINUPD, CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name, value):
    """Literal field without indexing, new name (RFC 7541 §6.2.2)."""
    name, value = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def indexed_literal(name, value):
    """Literal with incremental indexing, new name (§6.2.1): fills the dynamic table."""
    name, value = name.encode(), value.encode()
    return b"\x40" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def settings(*pairs, ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v)
                                                         for k, v in pairs))


GET = b"\x82"        # :method GET
POST = b"\x83"       # :method POST
PATH_ROOT = b"\x84"  # :path /
HTTP = b"\x86"       # :scheme http
HTTPS = b"\x87"      # :scheme https
STATUS_200 = b"\x88"
STATUS_404 = b"\x8d"


def req_head(method=GET, path=None, extra=b"", authority="example.com"):
    block = method + HTTPS + (literal(":path", path) if path else PATH_ROOT)
    if authority is not None:
        block += literal(":authority", authority)
    return block + extra


def cfg(settings_bits=0, seed=1, chunks=0, shutdown=0xFF):
    return bytes([settings_bits]) + struct.pack(">I", seed)[0:4] + b"\x00" + \
        bytes([chunks, shutdown])


SERVER = {
    "get": settings() + frame(HEADERS, END_HEADERS | END_STREAM, 1, req_head()) +
    settings(ack=True),
    "post_body_trailers": settings((4, 1 << 20)) +
    frame(HEADERS, END_HEADERS, 1, req_head(POST, "/upload?x=1", literal("content-type", "a/b"))) +
    frame(DATA, 0, 1, b"hello ") + frame(DATA, 0, 1, b"world") +
    frame(HEADERS, END_HEADERS | END_STREAM, 1, literal("grpc-status", "0")),
    "content_length": settings() +
    frame(HEADERS, END_HEADERS, 1, req_head(POST, extra=literal("content-length", "3"))) +
    frame(DATA, END_STREAM, 1, b"abcd"),
    "many_streams_reset": settings((3, 100)) +
    b"".join(frame(HEADERS, END_HEADERS | END_STREAM, i, req_head()) for i in (1, 3, 5, 7)) +
    frame(RST, 0, 3, struct.pack(">I", 8)) + frame(WINUPD, 0, 0, struct.pack(">I", 1 << 20)) +
    frame(WINUPD, 0, 5, struct.pack(">I", 1 << 20)),
    "rapid_reset": settings() + b"".join(
        frame(HEADERS, END_HEADERS, i, req_head()) + frame(RST, 0, i, struct.pack(">I", 8))
        for i in range(1, 40, 2)),
    "continuation": settings() + frame(HEADERS, 0, 1, req_head()[:3]) +
    frame(CONT, 0, 1, req_head()[3:]) + frame(CONT, END_HEADERS, 1, literal("x-a", "b")) +
    frame(DATA, END_STREAM, 1, b""),
    "bad_fields": settings() +
    frame(HEADERS, END_HEADERS | END_STREAM, 1, req_head(extra=literal("X-Upper", "v"))) +
    frame(HEADERS, END_HEADERS | END_STREAM, 3, req_head(extra=literal("x-crlf", "a\r\nb"))) +
    frame(HEADERS, END_HEADERS | END_STREAM, 5, req_head(extra=literal("connection", "close"))) +
    frame(HEADERS, END_HEADERS | END_STREAM, 7, req_head(extra=literal("te", "gzip"))),
    "cookies_host_te": settings() + frame(
        HEADERS, END_HEADERS | END_STREAM, 1,
        req_head(authority=None, extra=literal("host", "Example.COM:8080") +
                 literal("cookie", "a=1") + literal("cookie", "b=2") + literal("te", "trailers"))),
    "connect_options_star": settings() +
    frame(HEADERS, END_HEADERS | END_STREAM, 1, literal(":method", "CONNECT") +
          literal(":authority", "example.com:443")) +
    frame(HEADERS, END_HEADERS | END_STREAM, 3, literal(":method", "OPTIONS") + HTTPS +
          literal(":path", "*") + literal(":authority", "a")),
    "hpack_bomb": settings() + frame(
        HEADERS, END_HEADERS | END_STREAM, 1,
        req_head(extra=indexed_literal("x-big", "A" * 3000) + b"\xbe" * 20)),
    "ping_priority_padded": settings((2, 0), (5, 16384)) + frame(PING, 0, 0, b"12345678") +
    frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 16)) +
    frame(HEADERS, END_HEADERS | PADDED | PRIO, 1,
          b"\x03" + struct.pack(">IB", 0, 16) + req_head(POST) + b"\x00\x00\x00") +
    frame(DATA, PADDED | END_STREAM, 1, b"\x02ab\x00\x00"),
    "goaway_client": settings() + frame(HEADERS, END_HEADERS, 1, req_head(POST)) +
    frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)) + frame(DATA, END_STREAM, 1, b"z"),
    "zero_window": settings((4, 0)) + frame(HEADERS, END_HEADERS | END_STREAM, 1, req_head()) +
    frame(WINUPD, 0, 1, struct.pack(">I", 10)) + frame(WINUPD, 0, 1, struct.pack(">I", 1000)),
    "settings_flood": settings() + settings((1, 100)) * 20 + frame(PING, 0, 0, b"a" * 8) * 20,
}

SERVER_CFG = [cfg(), cfg(0x01, 7, 3, 1), cfg(0x46, 99, 5, 0x82), cfg(0x9D, 1234, 7, 2),
              cfg(0x2A, 42, 2, 0)]


def resp_head(status=STATUS_200, extra=b""):
    return status + extra


CLIENT = {
    "ok": settings(ack=True) + frame(HEADERS, END_HEADERS, 1, resp_head(
        extra=literal("content-type", "text/plain"))) + frame(DATA, END_STREAM, 1, b"hi"),
    "continue_then_200_trailers": settings(ack=True) +
    frame(HEADERS, END_HEADERS, 1, literal(":status", "100")) +
    frame(HEADERS, END_HEADERS, 1, resp_head()) + frame(DATA, 0, 1, b"body") +
    frame(HEADERS, END_HEADERS | END_STREAM, 1, literal("grpc-status", "0")),
    "no_body_404": settings((3, 1)) +
    frame(HEADERS, END_HEADERS | END_STREAM, 1, resp_head(STATUS_404)) +
    frame(HEADERS, END_HEADERS | END_STREAM, 3, resp_head()),
    "refused_goaway": settings(ack=True) + frame(RST, 0, 3, struct.pack(">I", 7)) +
    frame(HEADERS, END_HEADERS | END_STREAM, 1, resp_head()) +
    frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)),
    "window_updates": settings((4, 1 << 20), (5, 1 << 20)) +
    frame(WINUPD, 0, 0, struct.pack(">I", 1 << 24)) +
    frame(WINUPD, 0, 1, struct.pack(">I", 1 << 20)) + frame(HEADERS, END_HEADERS, 1, resp_head()) +
    frame(DATA, 0, 1, b"x" * 1000) + frame(PING, ACK, 0, b"\x00" * 8),
    "bad_status_fields": settings(ack=True) +
    frame(HEADERS, END_HEADERS | END_STREAM, 1, literal(":status", "2x0")) +
    frame(HEADERS, END_HEADERS | END_STREAM, 3, resp_head(extra=literal("X-Up", "v"))) +
    frame(HEADERS, END_HEADERS | END_STREAM, 5, resp_head(extra=literal("x-nl", "a\nb"))),
    "content_length_mismatch": settings(ack=True) +
    frame(HEADERS, END_HEADERS, 1, resp_head(extra=literal("content-length", "2"))) +
    frame(DATA, END_STREAM, 1, b"abc"),
    "continuation_bomb": settings(ack=True) + frame(HEADERS, 0, 1, resp_head()) +
    b"".join(frame(CONT, 0, 1, indexed_literal("x-b%d" % i, "v" * 200)) for i in range(12)) +
    frame(CONT, END_HEADERS, 1, b""),
    "push_promise": settings(ack=True) +
    frame(PUSH, END_HEADERS, 1, struct.pack(">I", 2) + req_head()),
}

CLIENT_CFG = [cfg(), cfg(0x03, 5, 2, 1), cfg(0x45, 77, 4, 0), cfg(0x9A, 4321, 6, 3),
              cfg(0x21, 8, 1, 0xFF)]


# Reproducers of codec bugs the targets found, fixed since (a :status below 100 taken for a final
# response; a second GOAWAY with a higher last-stream-id after the reset budget): replay them
# with `hsp_h2_client_fuzz fuzz/corpus/h2_client_repro/*` (and the server's likewise).
CLIENT_REPRO = {
    # A three-digit :status below 100 is taken for a final response (on_response_head(50)).
    "status_050": settings(ack=True) +
    frame(HEADERS, END_HEADERS | END_STREAM, 1, literal(":status", "050")) + cfg(),
}


SERVER_REPRO = {
    # reset_burst 3 (config bit 0x80): the 4th RST_STREAM makes nghttp2 queue GOAWAY(7,
    # INTERNAL_ERROR); stream 9's HEADERS in the same read are still processed, and their broken
    # HPACK block (index 0) makes nghttp2 queue GOAWAY(9, COMPRESSION_ERROR): the last-stream-id
    # goes up from 7 to 9 on the wire (RFC 9113 §6.8: MUST NOT increase).
    "goaway_last_id_increases": settings() + b"".join(
        frame(HEADERS, END_HEADERS, i, req_head()) + frame(RST, 0, i, struct.pack(">I", 8))
        for i in (1, 3, 5, 7)) + frame(HEADERS, END_HEADERS | END_STREAM, 9, b"\x80") +
    cfg(0x80),
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for side, seeds, cfgs in (("h2_server", SERVER, SERVER_CFG), ("h2_client", CLIENT, CLIENT_CFG)):
        out_dir = os.path.join(here, side)
        os.makedirs(out_dir, exist_ok=True)
        for i, (name, body) in enumerate(sorted(seeds.items())):
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(body + cfgs[i % len(cfgs)])
    out_dir = os.path.join(here, "h2_server_repro")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in SERVER_REPRO.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    out_dir = os.path.join(here, "h2_client_repro")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in CLIENT_REPRO.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

"""A gRPC server and client for the gateway's gRPC tests (Debian's python3-grpcio, run with
/usr/bin/python3). No protoc: generic handlers with no serializers, so messages are raw bytes.

Server (its own process, so that grpcio's threads never share a process with the test's
fork/exec of the gateway):

    /usr/bin/python3 grpc_peer.py serve
        binds 127.0.0.1:0 (insecure: h2c), prints "port N" on stdout, serves until SIGTERM
        (the harness also sets PR_SET_PDEATHSIG: it dies with the test).

Service /hsp.test.Echo/<method>:
  Unary          request -> b"echo:" + request; initial metadata x-echo-initial=1, trailing
                 x-echo-trailer=done, and every request metadata key starting with x-client-
                 echoed back as trailing metadata.
  ServerStream   request b"N" -> N messages b"message i" (i = 0..N-1).
  Bidi           echoes each message as it arrives: b"bidi:" + message.
  Fail           aborts with NOT_FOUND, details "no such thing: <request>", trailing metadata
                 x-fail-reason=missing and a binary x-fail-bin=b"\\x00\\x01\\xfe\\xff".
  Big            request b"N" -> one message of N bytes (harness.PATTERN repeated); or a big
                 request -> its sha256 hex digest (when the request is longer than 32 bytes).

Client helpers: channel(port, root_pem, name) makes a TLS channel to 127.0.0.1:port with the
given SNI / :authority name (never resolved) and no proxy; the stubs below take bytes.
"""

import hashlib
import signal
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "hsp.test.Echo"
MAX_MESSAGE = 8 << 20
PATTERN = hashlib.sha256(b"hsp").digest() * 2048  # as harness.PATTERN


def pattern(n):
    full, rest = divmod(n, len(PATTERN))
    return PATTERN * full + PATTERN[:rest]


def _unary(request, context):
    context.send_initial_metadata((("x-echo-initial", "1"),))
    trailing = [("x-echo-trailer", "done")]
    trailing += [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-client-")]
    context.set_trailing_metadata(tuple(trailing))
    return b"echo:" + request


def _server_stream(request, context):
    for i in range(int(request.decode())):
        yield b"message %d" % i


def _bidi(request_iterator, context):
    for msg in request_iterator:
        yield b"bidi:" + msg


def _fail(request, context):
    context.set_trailing_metadata((("x-fail-reason", "missing"),
                                   ("x-fail-bin", b"\x00\x01\xfe\xff")))
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: %s" % request.decode())


def _big(request, context):
    if len(request) > 32:
        return hashlib.sha256(request).hexdigest().encode()
    return pattern(int(request.decode()))


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                  ("grpc.max_send_message_length", MAX_MESSAGE)])
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
        "Big": grpc.unary_unary_rpc_method_handler(_big),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("port %d" % port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    server.stop(grace=1).wait()


# ---------------------------------------------------------------------------------------------
# Client side.

def channel(port, root_pem, name):
    """A TLS channel to 127.0.0.1:port presenting `name` as SNI and :authority; the name is never
    resolved, and no HTTP proxy from the environment is used."""
    creds = grpc.ssl_channel_credentials(root_certificates=root_pem)
    authority = "%s:%d" % (name, port)
    return grpc.secure_channel("127.0.0.1:%d" % port, creds, options=[
        ("grpc.ssl_target_name_override", name),
        ("grpc.default_authority", authority),
        ("grpc.enable_http_proxy", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ])


def insecure_channel(port):
    return grpc.insecure_channel("127.0.0.1:%d" % port, options=[
        ("grpc.enable_http_proxy", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ])


def method(name):
    return "/%s/%s" % (SERVICE, name)


def unary(ch, name):
    return ch.unary_unary(method(name))


def server_stream(ch, name="ServerStream"):
    return ch.unary_stream(method(name))


def bidi(ch, name="Bidi"):
    return ch.stream_stream(method(name))


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        print("usage: grpc_peer.py serve", file=sys.stderr)
        sys.exit(2)

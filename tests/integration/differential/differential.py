"""Differential test: one Caddyfile, run through Debian's caddy 2.6.2 and through hsp-gateway
against the same upstreams, the same requests to both; status, body, response headers and what
the upstream saw must match, or the difference is listed in KNOWN below (and in
KNOWN_DIFFERENCES.md) with the reason.

  python3 differential.py CASE [CASE...]   (CASE: a name under cases/, without extension)
  python3 differential.py --all

Case files: cases/NAME.caddyfile (site blocks only; the harness adds the global options) and
cases/NAME.json:
  {"requests": [{"id": "r1", "method": "GET", "path": "/x", "headers": [["K", "V"]],
                 "body": "text", "host": "example.test", "source_ip": "127.0.0.2",
                 "group": "g"},
                {"id": "r2", "raw": "GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"}],
   "ignore": ["header:x-upstream", "upstream"],       # fields not compared in this case
   "env": {"NAME": "value"},                           # extra environment for both gateways
   "files": {"sites/a.caddy": "..."},                  # files next to the Caddyfile (import)
   "global_options": ["servers { ... }"]}
Tokens in the Caddyfile: __PORT__ (the gateway's port, differs per gateway), __UP1__, __UP2__
(echo upstreams), __DOWN__ (a refused port).

Comparison rules:
  - status and body always (bodies normalised: the gateway's own port -> PORT);
  - upstream echo bodies (JSON) are compared field by field: method, target, version, body
    length and hash, which upstream, and the request headers the upstream saw;
  - a header set by only one side is a difference when it is STRICT (mentioned in the case's
    Caddyfile, or in ALWAYS_STRICT); otherwise it is reported but tolerated;
  - IGNORED_HEADERS are never compared (framing and per-process fields).
  - requests with the same "group" must reach the same upstream (for hash policies, where which
    upstream is picked is the gateway's business, not the user's).
"""

import glob
import json
import os
import re
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402

CASES = os.path.join(HERE, "cases")

# Never compared: per-process or framing fields (bodies are compared instead).
IGNORED_HEADERS = {"date", "server", "connection", "keep-alive", "transfer-encoding",
                   "content-length"}
# Request headers the upstream sees that are not compared (see KNOWN_DIFFERENCES.md).
IGNORED_UPSTREAM_HEADERS = {"content-length", "transfer-encoding"}
# Compared even when only one side sets them.
ALWAYS_STRICT = {"location", "content-type", "x-forwarded-for", "x-forwarded-proto",
                 "x-forwarded-host", "cache-control", "x-upstream", "x-debug-info", "x-multi",
                 "accept-encoding", "user-agent", "host"}

# Known, intended differences: (case, request id or "*", field) -> reason. field is "status",
# "body", "header:NAME", "upstream_header:NAME", "upstream[.KEY]", or "*" (every field of that
# request). Copied to KNOWN_DIFFERENCES.md.
KNOWN = {
    ("*", "*", "upstream_header:accept-encoding"):
        "Go's HTTP transport (Caddy) adds `Accept-Encoding: gzip` to upstream requests that "
        "have none and then transparently gunzips the response; hsp-gateway forwards the "
        "client's Accept-Encoding unchanged (no hidden decompression on the data path).",
    ("04-header-proxy", "deferred", "header:x-upstream"):
        "Caddy 2.6.2 has no `>` (defer) prefix on `header` fields: it takes `>X-Upstream` as a "
        "field name, which Go then drops as invalid, so the op does nothing. hsp-gateway "
        "implements `>` as the issue and later Caddy versions define it (a deferred set, applied "
        "when the response is written, so it replaces the upstream's value).",
    ("23-request-body", "over", "status"):
        "Body over `request_body max_size` while proxying: Caddy 2.6.2 answers 502 (the "
        "MaxBytesReader error surfaces as a proxy error); hsp-gateway answers 413 Content Too "
        "Large, which is what the limit means (RFC 9110 §15.5.14).",
    ("23-request-body", "respond-over", "status"):
        "hsp-gateway checks a declared Content-Length against `request_body max_size` before any "
        "handler runs, so a `respond` route answers 413 too; Caddy enforces the limit only when "
        "a handler reads the body, and `respond` never does (200).",
    ("36-rewrite-edges", "enc", "upstream.target"):
        "`rewrite /enc /with%20space`: Caddy 2.6.2 takes the written path as unescaped text and "
        "escapes it again, so the upstream receives `/with%2520space`; hsp-gateway keeps the "
        "target as written (`/with%20space`).",
    ("37-strip-edges", "noslash-x", "upstream.target"):
        "`handle_path /noslash*` on `/noslashx`: Caddy 2.6.2 strips the prefix and sends the "
        "request-target `x` (no leading slash, not a valid origin-form); hsp-gateway sends `/x`.",
    ("39-request-forms", "cl-and-te", "*"):
        "A request with both Content-Length and Transfer-Encoding: Go (Caddy) lets chunked win "
        "and proxies it; hsp-gateway answers 400 and closes, which RFC 9112 §6.3 allows and "
        "which closes the request-smuggling door such messages open.",
    ("39-request-forms", "http11-no-host", "body"): "error text (see KNOWN_DIFFERENCES.md)",
    ("39-request-forms", "space-before-colon", "body"): "error text (see KNOWN_DIFFERENCES.md)",
    ("39-request-forms", "nul-in-header", "body"): "error text (see KNOWN_DIFFERENCES.md)",
    ("23-request-body", "respond-over", "body"): "see the status entry of this request",
    ("23-request-body", "respond-over", "header:content-type"):
        "see the status entry of this request",
}


def load_case(name):
    with open(os.path.join(CASES, name + ".caddyfile")) as f:
        caddyfile = f.read()
    with open(os.path.join(CASES, name + ".json")) as f:
        spec = json.load(f)
    return caddyfile, spec


def send(port, req):
    source_ip = req.get("source_ip")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(15)
    if source_ip:
        sock.bind((source_ip, 0))
    sock.connect((harness.LOOPBACK, port))
    client = harness.Client.__new__(harness.Client)
    client.port, client.host, client.timeout = port, harness.LOOPBACK, 15
    client.conn = harness.Conn(sock, 15)
    try:
        if "raw" in req:  # exact bytes on the wire (malformed or unusual requests)
            client.conn.sendall(req["raw"].encode("latin-1"))
            return client.read_response(req.get("method", "GET"))
        body = req.get("body")
        body = body.encode() if body is not None else None
        headers = [tuple(h) for h in req.get("headers", [])]
        method = req.get("method", "GET")
        resp = client.request(method, req.get("path", "/"), headers, body,
                              host=req.get("host", "example.test"))
        return resp
    except (OSError, ConnectionError) as e:
        return e
    finally:
        client.close()


def normalise(text, port):
    return text.replace(str(port), "PORT")


def describe(resp, port):
    """A comparable view of a response: status, headers (lower-case name -> [values]), body, and
    the upstream's echo when the body is one."""
    if isinstance(resp, Exception):
        return {"error": type(resp).__name__}
    headers = {}
    for k, v in resp.headers:
        headers.setdefault(k.lower(), []).append(normalise(v, port))
    body = normalise(resp.body.decode("latin-1"), port)
    echo = None
    if (resp.header("content-type") or "").startswith("application/json"):
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and "server" in doc and "headers" in doc:
                echo = doc
        except ValueError:
            pass
    out = {"status": resp.status, "headers": headers, "body": body}
    if echo is not None:
        seen = {}
        for k, v in echo["headers"]:
            seen.setdefault(k.lower(), []).append(v)
        out["upstream"] = {"server": echo["server"], "method": echo["method"],
                           "target": echo["target"], "version": echo["version"],
                           "body_len": echo["body_len"], "body_sha256": echo["body_sha256"]}
        out["upstream_headers"] = seen
        del out["body"]  # compared field by field instead (it holds connection ids)
    return out


def strict_names(caddyfile):
    words = set(w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9-]*", caddyfile))
    return ALWAYS_STRICT | words


def compare(case, rid, ref, got, strict, ignore):
    """Returns a list of (field, caddy value, hsp value)."""
    diffs = []
    if "error" in ref or "error" in got:
        if ref.get("error") != got.get("error"):
            diffs.append(("error", ref.get("error"), got.get("error")))
        return diffs
    if ref["status"] != got["status"]:
        diffs.append(("status", ref["status"], got["status"]))
    if "body" not in ignore and ref.get("body") != got.get("body"):
        diffs.append(("body", ref.get("body"), got.get("body")))
    for name in sorted(set(ref["headers"]) | set(got["headers"])):
        if name in IGNORED_HEADERS or "header:" + name in ignore:
            continue
        a, b = ref["headers"].get(name), got["headers"].get(name)
        if a == b:
            continue
        if (a is None or b is None) and name not in strict:
            harness.log("  [%s %s] note: header %s only on %s (tolerated)"
                        % (case, rid, name, "caddy" if b is None else "hsp"))
            continue
        diffs.append(("header:" + name, a, b))
    if ("upstream" in ref) != ("upstream" in got):
        diffs.append(("upstream", ref.get("upstream"), got.get("upstream")))
    elif "upstream" in ref:
        for k in ref["upstream"]:
            if "upstream" in ignore or "upstream." + k in ignore:
                continue
            if ref["upstream"][k] != got["upstream"][k]:
                diffs.append(("upstream." + k, ref["upstream"][k], got["upstream"][k]))
        ra, ga = ref["upstream_headers"], got["upstream_headers"]
        for name in sorted(set(ra) | set(ga)):
            if name in IGNORED_UPSTREAM_HEADERS or "upstream_header:" + name in ignore:
                continue
            a, b = ra.get(name), ga.get(name)
            if a == b:
                continue
            if (a is None or b is None) and name not in strict:
                harness.log("  [%s %s] note: upstream saw %s only via %s (tolerated)"
                            % (case, rid, name, "caddy" if b is None else "hsp"))
                continue
            diffs.append(("upstream_header:" + name, a, b))
    return diffs


def run_case(name, caddy_bin, hsp_bin):
    caddyfile, spec = load_case(name)
    ups = {"UP1": harness.UpstreamServer(harness.echo_handler(), "UP1"),
           "UP2": harness.UpstreamServer(harness.echo_handler(), "UP2")}
    down = "127.0.0.1:%d" % harness.closed_port()
    env_extra = spec.get("env", {})
    for k, v in env_extra.items():
        os.environ[k] = v
    results = {}
    gateways = []
    try:
        for kind, binary in (("caddy", caddy_bin), ("hsp", hsp_bin)):
            port = harness.free_port()
            subs = {"PORT": port, "DOWN": down}
            subs.update({k: u.addr for k, u in ups.items()})
            files = {k: harness.render(v, subs) for k, v in spec.get("files", {}).items()}
            gw = harness.Gateway(harness.render(caddyfile, subs), [port], binary=binary,
                                 files=files,
                                 kind="caddy" if kind == "caddy" else
                                 harness.gateway_kind(binary),
                                 global_options=spec.get("global_options", []),
                                 name="diff-" + kind)
            gateways.append(gw)
            try:
                gw.start()
            except RuntimeError as e:
                raise AssertionError("%s failed to start on case %s: %s" % (kind, name, e))
            reqs = [json.loads(harness.render(json.dumps(r), {"PORT": port}))
                    for r in spec["requests"]]
            results[kind] = [describe(send(port, r), port) for r in reqs]
            gw.stop()
    finally:
        for gw in gateways:
            gw.stop()
        for u in ups.values():
            u.stop()
    strict = strict_names(caddyfile)
    ignore = set(spec.get("ignore", []))
    failures, known = [], []
    for i, req in enumerate(spec["requests"]):
        rid = req.get("id", str(i))
        for field, a, b in compare(name, rid, results["caddy"][i], results["hsp"][i], strict,
                                   ignore):
            reason = (KNOWN.get((name, rid, field)) or KNOWN.get((name, rid, "*"))
                      or KNOWN.get((name, "*", field)) or KNOWN.get(("*", "*", field)))
            entry = "%s %s %s: caddy=%r hsp=%r" % (name, rid, field, a, b)
            (known if reason else failures).append(entry + ((" [known: %s]" % reason)
                                                            if reason else ""))
    # Same group -> same upstream, on each gateway.
    for kind in ("caddy", "hsp"):
        groups = {}
        for req, res in zip(spec["requests"], results[kind]):
            if req.get("group") and "upstream" in res:
                groups.setdefault(req["group"], set()).add(res["upstream"]["server"])
        for g, servers in groups.items():
            if len(servers) > 1:
                failures.append("%s group %s: %s spread over upstreams %s"
                                % (name, g, kind, sorted(servers)))
    return results, failures, known


def main(argv):
    names = argv[1:]
    if names == ["--all"]:
        names = sorted(os.path.basename(p)[:-len(".caddyfile")]
                       for p in glob.glob(os.path.join(CASES, "*.caddyfile")))
    if not names:
        print(__doc__)
        return 2
    caddy_bin = harness.caddy_binary()
    hsp_bin = os.environ.get("HSP_GATEWAY_DIFF") or harness.gateway_binary()
    bad = 0
    for name in names:
        try:
            results, failures, known = run_case(name, caddy_bin, hsp_bin)
        except AssertionError as e:
            print("FAIL %s: %s" % (name, e))
            bad += 1
            continue
        if os.environ.get("HSP_DIFF_VERBOSE"):
            for kind in ("caddy", "hsp"):
                print("--- %s" % kind)
                for r in results[kind]:
                    print(json.dumps(r, sort_keys=True))
        by_field = {}
        for k in known:
            field = k.split(" [known: ")[0].split(": caddy=")[0].split(" ", 2)[2]
            by_field[field] = by_field.get(field, 0) + 1
        for field, n in sorted(by_field.items()):
            print("  known difference (%d request(s)): %s" % (n, field))
        if failures:
            bad += 1
            print("FAIL %s (%d difference(s)):" % (name, len(failures)))
            for f in failures:
                print("  " + f)
        else:
            print("PASS %s (%d requests)" % (name, len(load_case(name)[1]["requests"])))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

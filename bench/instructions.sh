#!/usr/bin/env bash
# bench/instructions.sh: user-space instructions per proxied request, counted by callgrind.
# Unlike CPU time, the count does not depend on a quiet machine, so it shows what a change to
# the data plane costs or saves even while other work runs. Prints one line per protocol; it is
# a benchmark, not a test.
#
#   bash bench/instructions.sh                 # h1 and h2, 10 000 requests each (~3 minutes)
#   N=30000 PROTOS=h2 bash bench/instructions.sh
#   PEER=nginx bash bench/instructions.sh      # the same figure for nginx as the proxy (h1)
#   HSP_GATEWAY=path/to/hsp-gateway bash bench/instructions.sh
#   KEEP=1 bash bench/instructions.sh          # + ./callgrind.*.out for callgrind_annotate
#
# One nginx backend (one worker, `return 200`, 13-byte body) and the proxy under valgrind's
# callgrind (--threads 1), all on 127.0.0.1 with ports the kernel hands out; h2load -c 50 sends
# 2 000 requests of warm-up, the counters are zeroed, then N requests are counted (h1: --h1;
# h2: -m 10 over TLS with a certificate made here; the 50 TLS handshakes are included, ~13k
# instructions per request at N=10 000, ~4k at 30 000). Kernel work (system calls) is not
# counted: `bench/peers.sh` measures total CPU time.
# Needs valgrind, nginx, h2load (nghttp2-client), openssl, curl: HSP_WITH_BENCH=1
# scripts/install-deps.sh installs all but valgrind (Debian's `valgrind`).
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
HSP_GATEWAY=${HSP_GATEWAY:-$repo/build/gateway/hsp-gateway}
N=${N:-10000}
PEER=${PEER:-hsp-gateway}
default_protos="h1 h2"
[ "$PEER" = nginx ] && default_protos=h1
PROTOS=${PROTOS:-$default_protos}

for tool in valgrind callgrind_control callgrind_annotate nginx h2load openssl curl python3; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "instructions: missing $tool (HSP_WITH_BENCH=1 scripts/install-deps.sh; valgrind)" >&2
    exit 2
  }
done
[ "$PEER" = nginx ] || [ -x "$HSP_GATEWAY" ] || {
  echo "instructions: no hsp-gateway at $HSP_GATEWAY (scripts/build.sh, or set HSP_GATEWAY)" >&2
  exit 2
}

WORK=$(mktemp -d /tmp/instructions.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_up() { # $1 = URL
  for _ in $(seq 300); do curl -sk -o /dev/null "$1" && return 0; sleep 0.2; done
  echo "instructions: nothing answers at $1" >&2
  return 1
}

BACKEND=$(free_port)
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "Hello, World!"; } } }
CONF
nginx -c "$WORK/backend.conf" -e "$WORK/backend.err" &
PIDS+=($!)
wait_up "http://127.0.0.1:$BACKEND/" || exit 1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

for proto in $PROTOS; do
  PORT=$(free_port)
  if [ "$PEER" = nginx ]; then
    [ "$proto" = h1 ] || { echo "instructions: PEER=nginx measures h1 only" >&2; continue; }
    cat > "$WORK/proxy.conf" <<CONF
master_process off; daemon off; pid $WORK/proxy.pid; error_log $WORK/proxy.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream b { server 127.0.0.1:$BACKEND; keepalive 1024; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$PORT;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
    cmd=(nginx -c "$WORK/proxy.conf" -e "$WORK/proxy.err")
  else
    site="http://127.0.0.1:$PORT"
    tls=""
    if [ "$proto" = h2 ]; then
      site="https://localhost:$PORT"
      tls="	tls $WORK/cert.pem $WORK/key.pem"
    fi
    cat > "$WORK/Caddyfile" <<CONF
{
	auto_https off
	admin off
}
$site {
	bind 127.0.0.1
$tls
	reverse_proxy 127.0.0.1:$BACKEND {
		transport http {
			keepalive_idle_conns 1024
			keepalive_idle_conns_per_host 1024
		}
	}
}
CONF
    cmd=("$HSP_GATEWAY" run --config "$WORK/Caddyfile" --threads 1)
  fi
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$proto.out" "${cmd[@]}" \
    > "$WORK/proxy.$proto.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if [ "$proto" = h2 ]; then
    url="https://localhost:$PORT/" args=(-m 10)
  else
    url="http://127.0.0.1:$PORT/" args=(--h1)
  fi
  wait_up "$url" || exit 1
  timeout 300 h2load -n 2000 -c 50 "${args[@]}" "$url" > /dev/null 2>&1
  callgrind_control -z "$pid" > /dev/null 2>&1
  timeout 600 h2load -n "$N" -c 50 "${args[@]}" "$url" > "$WORK/h2load.$proto.txt" 2>&1
  callgrind_control -d "$pid" > /dev/null 2>&1
  sleep 0.5
  ok=$(awk '/requests:/{print $8}' "$WORK/h2load.$proto.txt")
  out=$(ls -t "$WORK/cg.$proto.out"* | head -1)
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
  echo "$PEER $proto: $(python3 -c "print(round($total / $N))") instructions per request" \
    "($ok of $N requests succeeded)"
  [ -n "${KEEP:-}" ] && cp "$out" "./callgrind.$PEER.$proto.out"
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
done

#!/usr/bin/env bash
# bench/floor.sh: the kernel floor under issue 5's h1 CPU target. hsp-gateway must spend at most
# 0.8x nginx's CPU per proxied HTTP/1.1 request; this measures how much of that budget the kernel
# alone takes, with bench/floor/forwarder.cc: an epoll forwarder that copies bytes between each
# client connection and one upstream connection, with no HTTP at all (a measuring stick, not a
# proxy). nginx, the forwarder and hsp-gateway are loaded in turn in bench/peers.sh's layout; the
# room left for all of hsp-gateway's HTTP work is 0.8x nginx's figure minus the floor's.
# It is a benchmark, not a test: nothing is asserted.
#
#   bash bench/floor.sh                  # RUNS=2, DUR=8 s per load: ~2 minutes on a quiet machine
#   QUICK=1 bash bench/floor.sh          # 1 s loads, one run, no waiting for quiet: ~15 s
#   PROXIES="nginx floor" RUNS=3 bash bench/floor.sh
#
# Layout (as peers.sh, 2 cores): the proxy alone on CPU $PROXY_CPU; the backend nginx (one
# worker, `return 200` with a 13-byte body) and hsp-bench (-c$CONNS, 1 s warm-up, closed loop,
# h1 in cleartext) on CPU $LOAD_CPU. CPU µs/request = utime+stime of every process and thread of
# the proxy (from /proc/PID/stat) over the whole hsp-bench invocation, divided by the requests the
# backend served in that window (stub_status on a port of its own). Upstream connections: nginx
# and hsp-gateway keep an idle pool (the same keep-alive settings as peers.sh), the forwarder has
# one per client connection; either way 50 upstream connections carry the load.
#
# Everything listens on 127.0.0.1 only, on ports the kernel hands out at run time (a proxy that
# listens anywhere else is stopped); every load is bounded (hsp-bench -d, and `timeout` around
# it); every process the script starts is stopped on exit and on Ctrl-C, and only those.
#
# Knobs (environment): RUNS DUR WARM CONNS PROXIES PROXY_CPU LOAD_CPU HSP_GATEWAY HSP_BENCH
#   HSP_FLOOR_FORWARDER OUT QUICK QUIET_MAX QUIET_WAIT FOREIGN_MAX MAX_TRIES
# Needs Debian's nginx, curl, iproute2 (ss), util-linux (taskset), coreutils (timeout), python3,
# and hsp-bench, hsp-floor-forwarder and hsp-gateway built from this tree
# (ninja -C build hsp-gateway hsp-bench hsp-floor-forwarder).
set -u
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  RUNS=${RUNS:-1} DUR=${DUR:-1} MAX_TRIES=${MAX_TRIES:-1} QUIET_WAIT=${QUIET_WAIT:-0}
fi
RUNS=${RUNS:-2}
DUR=${DUR:-8}             # seconds of measured load (hsp-bench -d)
WARM=${WARM:-1}           # seconds of warm-up before it, same connections (hsp-bench -w)
CONNS=${CONNS:-50}
PROXIES=${PROXIES:-"nginx floor hsp-gateway"}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HSP_GATEWAY=${HSP_GATEWAY:-$repo/build/gateway/hsp-gateway}
HSP_BENCH=${HSP_BENCH:-$repo/build/bench/hsp-bench}
HSP_FLOOR_FORWARDER=${HSP_FLOOR_FORWARDER:-$repo/build/bench/hsp-floor-forwarder}
QUIET_MAX=${QUIET_MAX:-15}      # start a load once the machine is below this % of one core...
QUIET_WAIT=${QUIET_WAIT:-60}    # ...or after this many seconds of waiting (0: do not wait)
FOREIGN_MAX=${FOREIGN_MAX:-15}  # a load during which others used more (% of one core) is redone
MAX_TRIES=${MAX_TRIES:-3}       # at most this many times; the least disturbed one is kept
HZ=$(getconf CLK_TCK)

# ------------------------------------------------------------------------------ prerequisites
missing=()
for tool in nginx curl taskset ss timeout python3 pgrep; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "floor: missing ${missing[*]}; install with:" \
    "sudo HSP_WITH_BENCH=1 scripts/install-deps.sh" >&2
  exit 2
fi
for n in $PROXIES; do
  case $n in nginx | floor | hsp-gateway) ;;
    *) echo "floor: unknown proxy '$n' (nginx floor hsp-gateway)" >&2; exit 2 ;;
  esac
done
bins=("$HSP_BENCH")
case " $PROXIES " in *" floor "*) bins+=("$HSP_FLOOR_FORWARDER") ;; esac
case " $PROXIES " in *" hsp-gateway "*) bins+=("$HSP_GATEWAY") ;; esac
for bin in "${bins[@]}"; do
  if [ ! -x "$bin" ]; then
    echo "floor: no $(basename "$bin") at $bin; build it (cmake -S . -B build -G Ninja &&" \
      "ninja -C build hsp-gateway hsp-bench hsp-floor-forwarder) or set HSP_GATEWAY /" \
      "HSP_BENCH / HSP_FLOOR_FORWARDER" >&2
    exit 2
  fi
done
if [ "$(nproc)" -lt 2 ] || [ "$PROXY_CPU" = "$LOAD_CPU" ]; then
  echo "floor: needs two CPUs, the proxy's ($PROXY_CPU) apart from the load's ($LOAD_CPU)" >&2
  exit 2
fi

OUT=${OUT:-$(mktemp -d /tmp/floor.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "$OUT/work.XXXXXX")
LOG="$OUT/raw.txt"
RESULTS="$OUT/results.jsonl"  # one JSON object per load (or per proxy that failed to start)
: > "$LOG"
: > "$RESULTS"

# ------------------------------------------------------------------------------ process control
# Only processes started here are ever signalled, by the ids recorded in OWNED.
OWNED=()
own() { OWNED+=("$1"); }
disown_pid() {
  local keep=() p
  for p in "${OWNED[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
  OWNED=("${keep[@]}")
}
descendants() { # the pid and every process below it
  local c
  echo "$1"
  for c in $(pgrep -P "$1" 2>/dev/null); do descendants "$c"; done
}
stop_pid() { # TERM, up to 5 s, then KILL; then whatever it had started that is still alive
  local p=$1 below c
  below=$(descendants "$p" | tail -n +2)
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  for c in $below; do kill -0 "$c" 2>/dev/null && kill -KILL "$c" 2>/dev/null; done
  disown_pid "$p"
}
cleanup() {
  local p
  # A second Ctrl-C must not cut the cleanup short and leave servers behind.
  trap '' INT TERM
  trap - EXIT
  for p in "${OWNED[@]}"; do stop_pid "$p"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "floor: interrupted" >&2; cleanup; exit 130' INT TERM

note() { echo "$*" >> "$LOG"; }
say() { echo "$*" | tee -a "$LOG" >&2; }

# ------------------------------------------------------------------------------ measuring
user_sys_of() { # "utime stime" of a process tree, in clock ticks (each stat covers its threads)
  local p su=0 ss=0 u s
  for p in $(descendants "$1"); do
    # fields after "(comm) ": 12 = utime, 13 = stime
    read -r u s < <(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12, $13}')
    su=$((su + ${u:-0})); ss=$((ss + ${s:-0}))
  done
  echo "$su $ss"
}
busy_ticks() { # user+nice+system+irq+softirq summed over all CPUs
  awk '/^cpu[0-9]+ /{b += $2 + $3 + $4 + $7 + $8} END{print b}' /proc/stat
}
free_ports() { # N distinct TCP ports free on 127.0.0.1, from the kernel (held until all are found)
  python3 - "$1" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}
wait_listen() { # port pid; TCP, up to 15 s, while pid lives
  for _ in $(seq 150); do
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
backend_requests() { # requests the backend nginx has counted so far (stub_status)
  curl -s --max-time 5 "http://127.0.0.1:$STATUS_PORT/" | awk 'NR == 3 {print $3}'
}
quiet_gate() { # wait for other work on the machine (builds, other loads) to calm down
  local waited=0 a b pct
  [ "$QUIET_WAIT" -le 0 ] && return
  while :; do
    a=$(busy_ticks); sleep 1; b=$(busy_ticks)
    pct=$(((b - a) * 100 / HZ))
    if [ "$pct" -le "$QUIET_MAX" ] || [ "$waited" -ge "$QUIET_WAIT" ]; then
      note "quiet gate: machine busy ${pct}% of one core after ${waited}s of waiting"
      return
    fi
    waited=$((waited + 1))
  done
}
loopback_only() { # pid: prints the tree's TCP/UDP listeners that are not on 127.0.0.1
  local pids
  pids=$(descendants "$1" | paste -sd'|' -)
  { ss -Hltnp; ss -Hlunp; } 2>/dev/null | grep -E "pid=($pids)," | awk '$4 !~ /^127\.0\.0\.1:/'
}

# ------------------------------------------------------------------------------ configurations
# nginx as backend and as proxy: the same settings as bench/peers.sh, cleartext only.
nginx_prelude() { # $1 = directory
  cat <<EOF
daemon off;
master_process on;
worker_processes 1;
$([ "$(id -u)" = 0 ] && echo "user root;")
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $1/tmp-body;
  proxy_temp_path $1/tmp-proxy;
  fastcgi_temp_path $1/tmp-fastcgi;
  uwsgi_temp_path $1/tmp-uwsgi;
  scgi_temp_path $1/tmp-scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
EOF
}

write_backend_conf() { # return 200 with a 13-byte body; stub_status on its own port
  local d=$WORK/backend
  mkdir -p "$d"
  {
    nginx_prelude "$d"
    cat <<EOF
  default_type text/plain;
  server {
    listen 127.0.0.1:$BACKEND_H1 backlog=4096;
    location / { return 200 "Hello, World!"; }
  }
  # Its own port, so that the script's status requests never mix with the proxies'.
  server {
    listen 127.0.0.1:$STATUS_PORT;
    location / { stub_status; }
  }
}
EOF
  } > "$d/nginx.conf"
}

write_proxy_conf() { # $1 = proxy: cleartext h1 on $PX_H1
  local d=$WORK/$1
  mkdir -p "$d"
  case $1 in
    hsp-gateway)
      # peers.sh's h1 site and upstream keep-alive. http_port and https_port are spare ports
      # from the kernel so that nothing would ever try 80 or 443.
      cat > "$d/Caddyfile" <<EOF
{
	admin off
	skip_install_trust
	auto_https disable_redirects
	http_port $SPARE_PORT
	https_port $SPARE_TLS_PORT
}

http://127.0.0.1:$PX_H1 {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$BACKEND_H1 {
		transport http {
			keepalive 120s
			keepalive_idle_conns 1024
			keepalive_idle_conns_per_host 1024
		}
	}
}
EOF
      ;;
    nginx)
      {
        nginx_prelude "$d"
        cat <<EOF
  upstream backend {
    server 127.0.0.1:$BACKEND_H1;
    keepalive 1024;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$PX_H1 backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
      } > "$d/nginx.conf"
      ;;
    floor) ;;  # arguments only
  esac
}

start_on_cpu() { # cpu name argv...: starts argv pinned to cpu, output to $WORK/name/out.log
  local cpu=$1 name=$2
  shift 2
  taskset -c "$cpu" "$@" >>"$WORK/$name/out.log" 2>&1 &
  STARTED=$!
  own "$STARTED"
}

start_backend() {
  write_backend_conf
  start_on_cpu "$LOAD_CPU" backend nginx -p "$WORK/backend" -e "$WORK/backend/error.log" \
    -c "$WORK/backend/nginx.conf"
  BACKEND_PID=$STARTED
  wait_listen "$BACKEND_H1" "$BACKEND_PID" && wait_listen "$STATUS_PORT" "$BACKEND_PID"
}

start_proxy() { # $1 = name; sets PROXY_PID
  local n=$1 d=$WORK/$1
  write_proxy_conf "$n"
  mkdir -p "$d/home/data" "$d/home/config"
  case $n in
    hsp-gateway)
      HOME="$d/home" XDG_DATA_HOME="$d/home/data" XDG_CONFIG_HOME="$d/home/config" \
        start_on_cpu "$PROXY_CPU" "$n" "$HSP_GATEWAY" run --config "$d/Caddyfile" --threads 1
      ;;
    nginx) start_on_cpu "$PROXY_CPU" "$n" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" ;;
    floor) start_on_cpu "$PROXY_CPU" "$n" "$HSP_FLOOR_FORWARDER" "$PX_H1" "$BACKEND_H1" ;;
  esac
  PROXY_PID=$STARTED
  if ! wait_listen "$PX_H1" "$PROXY_PID"; then
    say "!! $n did not listen on 127.0.0.1:$PX_H1; its output:"
    tail -n 20 "$d/out.log" "$d/error.log" 2>/dev/null | tee -a "$LOG" >&2
    stop_pid "$PROXY_PID"
    return 1
  fi
  sleep 0.3  # let it finish starting (nginx's worker)
  local bad c1
  bad=$(loopback_only "$PROXY_PID")
  if [ -n "$bad" ]; then
    say "!! $n listens beyond 127.0.0.1, stopping it: $bad"
    stop_pid "$PROXY_PID"
    return 1
  fi
  c1=$(curl -s --max-time 5 -o "$WORK/body1" -w '%{http_version} %{http_code}' \
    "http://127.0.0.1:$PX_H1/")
  note "$n pid $PROXY_PID tree [$(descendants "$PROXY_PID" | paste -sd' ' -)]" \
    "threads $(find "/proc/$PROXY_PID/task" -mindepth 1 -maxdepth 1 | wc -l)" \
    "affinity $(taskset -pc "$PROXY_PID" | awk '{print $NF}')" \
    "check: HTTP/$c1 '$(cat "$WORK/body1" 2>/dev/null)'"
  if [ "$c1" != "1.1 200" ]; then
    say "!! $n answered '$c1' instead of '1.1 200'"
    stop_pid "$PROXY_PID"
    return 1
  fi
}

# ------------------------------------------------------------------------------ one load
BENCH_OUT=$WORK/bench.json
bench() { # url: one bounded closed-loop h1 load from CPU $LOAD_CPU -> $BENCH_OUT
  # `timeout` is the backstop should hsp-bench itself hang: warm-up + duration + 30 s.
  local limit
  limit=$(awk -v w="$WARM" -v d="$DUR" 'BEGIN{print int(w + d + 30)}')
  taskset -c "$LOAD_CPU" timeout -k 5 "$limit" \
    "$HSP_BENCH" "$1" --proto h1 -c "$CONNS" -d "$DUR" -w "$WARM" --json \
    > "$BENCH_OUT" 2> "$WORK/bench.err"
}

measure_once() { # who url: one load; its record -> $WORK/attempt.json
  local who=$1 url=$2
  quiet_gate
  local pu0 ps0 pu1 ps1 b0 b1 m0 m1 r0 r1 t0 t1 lg
  read -r pu0 ps0 < <(user_sys_of "$PROXY_PID")
  read -r b0 < <(user_sys_of "$BACKEND_PID" | awk '{print $1 + $2}')
  m0=$(busy_ticks)
  r0=$(backend_requests)
  t0=$(date +%s.%N)
  # In a subshell so that `times` reports hsp-bench's CPU (its children's) for the accounting.
  ( bench "$url"; echo "$?" > "$WORK/bench.rc"; times > "$WORK/bench.times" ) &
  local lp=$!
  own "$lp"
  wait "$lp"
  disown_pid "$lp"
  t1=$(date +%s.%N)
  r1=$(backend_requests)
  m1=$(busy_ticks)
  read -r b1 < <(user_sys_of "$BACKEND_PID" | awk '{print $1 + $2}')
  read -r pu1 ps1 < <(user_sys_of "$PROXY_PID")
  lg=$(awk 'NR == 2 {split($1, u, /[ms]/); split($2, s, /[ms]/);
    printf "%d", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * '"$HZ"'}' "$WORK/bench.times")
  { cat "$BENCH_OUT"; echo "---"; cat "$WORK/bench.err"; } >> "$LOG"
  # The second stub_status request counts itself: served = r1 - r0 - 1.
  python3 - "$BENCH_OUT" "$WORK/attempt.json" "$who" "$url" "$(cat "$WORK/bench.rc")" \
    "$WORK/bench.err" "$HZ" "$t0" "$t1" "$pu0" "$ps0" "$pu1" "$ps1" "$b0" "$b1" "${lg:-0}" \
    "$m0" "$m1" "${r0:-0}" "${r1:-0}" <<'PY'
import json, sys
(bench_path, out, who, url, rc, err_path, hz, t0, t1, pu0, ps0, pu1, ps1, b0, b1, lg, m0, m1, r0,
 r1) = sys.argv[1:]
try:
    bench = json.load(open(bench_path))
except Exception:
    bench = None
hz = int(hz)
wall = float(t1) - float(t0)
pu, ps = int(pu1) - int(pu0), int(ps1) - int(ps0)
proxy = pu + ps
busy = int(m1) - int(m0)
served = max(0, int(r1) - int(r0) - 1)
rec = {
    "who": who, "url": url, "rc": int(rc or -1),
    "stderr": open(err_path, errors="replace").read()[-300:],
    "bench": bench, "backend_served": served, "wall_s": round(wall, 3),
    "proxy_user_ticks": pu, "proxy_sys_ticks": ps, "hz": hz,
    "foreign_pct": round(max(0.0, 100.0 * (busy - proxy - (int(b1) - int(b0)) - int(lg)) / hz
                             / wall), 1),
    "proxy_core_pct": round(100.0 * proxy / hz / wall, 1),
}
if served:
    rec["cpu_us_per_req"] = round(proxy / hz * 1e6 / served, 2)
    rec["user_us_per_req"] = round(pu / hz * 1e6 / served, 2)
    rec["sys_us_per_req"] = round(ps / hz * 1e6 / served, 2)
json.dump(rec, open(out, "w"))
PY
}

measure() { # run who url: up to MAX_TRIES loads, keeps the least disturbed one
  local run=$1 who=$2 url=$3 try best_f=999999 f
  for try in $(seq "$MAX_TRIES"); do
    measure_once "$who" "$url"
    f=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["foreign_pct"]))' \
      "$WORK/attempt.json")
    if [ "$f" -lt "$best_f" ]; then
      best_f=$f
      cp "$WORK/attempt.json" "$WORK/best.json"
    fi
    [ "$f" -le "$FOREIGN_MAX" ] && break
    note "[$who] attempt $try disturbed (others used ${f}% of a core)"
  done
  python3 - "$WORK/best.json" "$run" "$try" >> "$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["run"], r["tries"] = int(sys.argv[2]), int(sys.argv[3])
print(json.dumps(r))
PY
  say "run $run $who: $(python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
b = r["bench"] or {}
print("%s req/s, CPU %s us/req (user %s + sys %s), status %s, others %s%%" % (
    "-" if b.get("rps") is None else "%.0f" % b["rps"], r.get("cpu_us_per_req", "-"),
    r.get("user_us_per_req", "-"), r.get("sys_us_per_req", "-"), b.get("status"),
    r["foreign_pct"]))' "$WORK/best.json")"
}

# ------------------------------------------------------------------------------ runs
read -r BACKEND_H1 STATUS_PORT PX_H1 SPARE_PORT SPARE_TLS_PORT <<< "$(free_ports 5)"
if ! start_backend; then
  say "floor: backend nginx did not start"
  tail "$WORK/backend/"*.log >&2
  exit 1
fi
note "backend pid $BACKEND_PID on 127.0.0.1:$BACKEND_H1; proxies on 127.0.0.1:$PX_H1"
VERSIONS="$(nginx -v 2>&1)"
case " $PROXIES " in
  *" hsp-gateway "*) VERSIONS="$VERSIONS | $("$HSP_GATEWAY" version 2>&1 | head -1)" ;;
esac
VERSIONS="$VERSIONS | $(uname -sr)"
note "versions: $VERSIONS"
say "floor: raw output in $OUT; $RUNS run(s), h1 loads of ${WARM}s warm-up + ${DUR}s, -c$CONNS," \
  "proxy on CPU $PROXY_CPU, backend + hsp-bench on CPU $LOAD_CPU"

read -r -a order <<< "$PROXIES"
for run in $(seq "$RUNS"); do
  # Rotate the order each run so that no proxy always goes first.
  k=$(((run - 1) % ${#order[@]}))
  rot=("${order[@]:$k}" "${order[@]:0:$k}")
  for n in "${rot[@]}"; do
    PROXY_PID=""
    if ! start_proxy "$n"; then
      printf '{"run": %d, "who": "%s", "na": "failed to start"}\n' "$run" "$n" >> "$RESULTS"
      continue
    fi
    measure "$run" "$n" "http://127.0.0.1:$PX_H1/"
    tail -5 "$WORK/$n/out.log" "$WORK/$n/error.log" >> "$LOG" 2>/dev/null
    stop_pid "$PROXY_PID"
  done
done

# ------------------------------------------------------------------------------ table
python3 - "$RESULTS" "$OUT/summary.md" "$VERSIONS" "$CONNS" "$WARM" "$DUR" "$PROXY_CPU" \
  "$LOAD_CPU" "$PROXIES" <<'PY'
import json, sys
path, out_path, versions, conns, warm, dur, pcpu, lcpu, proxies = sys.argv[1:]
recs = [json.loads(l) for l in open(path) if l.strip()]
names = {"nginx": "nginx", "floor": "floor (hsp-floor-forwarder)", "hsp-gateway": "hsp-gateway"}
L = []
P = L.append
P("# The kernel floor under the h1 CPU target")
P("")
P("Versions: %s." % " ".join(versions.split()))
P("")
P("Layout (as bench/peers.sh): each proxy alone on CPU %s (one worker/thread); backend nginx "
  "(one worker, `return 200`, 13-byte body) and hsp-bench on CPU %s; everything on 127.0.0.1. "
  "Loads: hsp-bench --proto h1 -c%s, %s s warm-up + %s s measured, closed loop. CPU µs/req = "
  "the proxy's utime+stime (whole process tree) over the load ÷ requests the backend served in "
  "it. floor = bench/floor/forwarder.cc, an epoll byte copier with no HTTP (one upstream "
  "connection per client connection): what the kernel alone costs per proxied request."
  % (pcpu, lcpu, conns, warm, dur))


def cpu(r):
    return r.get("cpu_us_per_req") if r and "na" not in r else None


for run in sorted({r["run"] for r in recs}):
    rr = {r["who"]: r for r in recs if r["run"] == run}
    ng = cpu(rr.get("nginx"))
    P("")
    P("## Run %d" % run)
    P("")
    P("| proxy | CPU µs/req | user µs/req | sys µs/req | req/s | CPU ×nginx | non-200 / errors "
      "| others % |")
    P("|---|---|---|---|---|---|---|---|")
    for who in proxies.split():
        r = rr.get(who)
        name = names[who]
        if r is None:
            continue
        if "na" in r:
            P("| %s | %s | | | | | | |" % (name, r["na"]))
            continue
        b = r.get("bench") or {}
        if b.get("rps") is None or cpu(r) is None:
            P("| %s | load failed (hsp-bench exit %s: %s) | | | | | | |" % (
                name, r.get("rc"), " ".join(r.get("stderr", "").split())[-120:]))
            continue
        status = {str(k): v for k, v in (b.get("status") or {}).items()}
        other = sum(v for k, v in status.items() if k != "200")
        errs = sum((b.get("errors") or {}).values())
        P("| %s | %.2f | %.2f | %.2f | %.0f | %s | %d / %d | %s |" % (
            name, cpu(r), r["user_us_per_req"], r["sys_us_per_req"], b["rps"],
            "%.2f" % (cpu(r) / ng) if ng else "–", other, errs, r["foreign_pct"]))
    fl, gw = cpu(rr.get("floor")), cpu(rr.get("hsp-gateway"))
    P("")
    if ng and fl:
        x = 0.8 * ng
        P("0.8x nginx = %.2f µs; floor = %.2f µs (%.2f x nginx): room left for HTTP work = "
          "%.2f µs" % (x, fl, fl / ng, x - fl))
        if gw:
            P("")
            P("hsp-gateway = %.2f µs (%.2f x nginx): %.2f µs of HTTP work above the floor, "
              "%s the 0.8x target by %.2f µs" % (gw, gw / ng, gw - fl,
                                                 "within" if gw <= x else "over", abs(gw - x)))
    else:
        P("0.8x nginx / floor: no figure (the nginx or the floor load is missing)")
P("")
P("others %: CPU used during the load by processes outside this benchmark, in % of one core "
  "(a load above FOREIGN_MAX is redone, the least disturbed attempt is kept); raw.txt and "
  "results.jsonl hold every figure.")
text = "\n".join(L) + "\n"
open(out_path, "w").write(text)
print(text)
PY
say "floor: summary in $OUT/summary.md"

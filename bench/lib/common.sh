# shellcheck shell=bash disable=SC2034 # it sets globals (OUT, WORK, ...) for the sourcing script
# bench/lib/common.sh: what bench/peers.sh and bench/floor.sh share, sourced by both. Functions
# only: sourcing it starts nothing, sets no trap and defines no variable.
#
# The layout both measure in: one proxy pinned to CPU $PROXY_CPU in front of a backend nginx
# (`return 200`, stub_status on a port of its own) that shares CPU $LOAD_CPU with hsp-bench; CPU
# per request is the proxy tree's utime+stime over a load divided by the requests the backend
# counted in it. Everything listens on 127.0.0.1, on ports the kernel hands out.
#
# Globals the functions read, set by the sourcing script before it calls them:
#   PROG                    the script's name, for messages ("peers", "floor")
#   (common_knobs sets QUICK PROXY_CPU LOAD_CPU HSP_GATEWAY HSP_BENCH QUIET_MAX QUIET_WAIT
#   FOREIGN_MAX MAX_TRIES HZ)
#   OUT WORK LOG RESULTS    from out_dirs (run directory, scratch, raw log, one JSON line a load)
#   PROXY_CPU LOAD_CPU HSP_BENCH CONNS DUR WARM HZ QUIET_MAX QUIET_WAIT FOREIGN_MAX MAX_TRIES
#   BACKEND_H1 STATUS_PORT  the backend's h1 and stub_status ports
#   BACKEND_PID PROXY_PID   (PROXY_PID empty: a load straight at the backend, no proxy figures)
#   NGINX_HTTP_EXTRA        optional array: lines added to every nginx config's http block
#   bench PROTO URL [ARG..] a function of the script's: one bounded load -> $BENCH_OUT and
#                           $WORK/bench.err (run_bench does the common part)
# and the ones they set: OWNED (pids to stop), STARTED, BENCH_OUT, MEASURE_TRIES.

# ------------------------------------------------------------------------------ knobs
common_knobs() { # repo: the knobs both scripts share, from the environment or these defaults
  QUICK=${QUICK:-0}
  if [ "$QUICK" = 1 ]; then # one try, no waiting for quiet
    MAX_TRIES=${MAX_TRIES:-1} QUIET_WAIT=${QUIET_WAIT:-0}
  fi
  PROXY_CPU=${PROXY_CPU:-0}
  LOAD_CPU=${LOAD_CPU:-1}
  HSP_GATEWAY=${HSP_GATEWAY:-$1/build/gateway/hsp-gateway}
  HSP_BENCH=${HSP_BENCH:-$1/build/bench/hsp-bench}
  QUIET_MAX=${QUIET_MAX:-15}     # start a load once the machine is below this % of one core...
  QUIET_WAIT=${QUIET_WAIT:-60}   # ...or after this many seconds of waiting (0: do not wait)
  FOREIGN_MAX=${FOREIGN_MAX:-15} # a load during which others used more (% of one core) is redone
  MAX_TRIES=${MAX_TRIES:-3}      # at most this many times; the least disturbed one is kept
  HZ=$(getconf CLK_TCK)
}

# ------------------------------------------------------------------------------ prerequisites
require_tools() { # tool...: exits 2 naming the commands that are missing
  local missing=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "$PROG: missing ${missing[*]}; install with: sudo HSP_WITH_BENCH=1" \
      "scripts/install-deps.sh" >&2
    exit 2
  fi
}
require_bins() { # hint bin...: exits 2 at the first binary that is not built; hint says how
  local hint=$1 bin
  shift
  for bin in "$@"; do
    if [ ! -x "$bin" ]; then
      echo "$PROG: no $(basename "$bin") at $bin; $hint" >&2
      exit 2
    fi
  done
}
require_two_cpus() {
  if [ "$(nproc)" -lt 2 ] || [ "$PROXY_CPU" = "$LOAD_CPU" ]; then
    echo "$PROG: needs two CPUs, the proxy's ($PROXY_CPU) apart from the load's ($LOAD_CPU)" >&2
    exit 2
  fi
}

out_dirs() { # sets OUT (kept: $OUT or a new /tmp/$PROG.*), WORK (removed on exit), LOG, RESULTS
  OUT=${OUT:-$(mktemp -d "/tmp/$PROG.XXXXXX")}
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  WORK=$(mktemp -d "$OUT/work.XXXXXX")
  LOG="$OUT/raw.txt"
  RESULTS="$OUT/results.jsonl" # one JSON object per load (or per proxy that failed to start)
  BENCH_OUT=$WORK/bench.json
  : >"$LOG"
  : >"$RESULTS"
}

# ------------------------------------------------------------------------------ process control
# Only processes started here are ever signalled, by the ids recorded in OWNED.
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
set_cleanup_traps() { # stop every owned process on exit, Ctrl-C and TERM
  OWNED=()
  trap cleanup EXIT
  trap 'echo "$PROG: interrupted" >&2; cleanup; exit 130' INT TERM
}
start_on_cpu() { # cpu name argv...: starts argv pinned to cpu, output to $WORK/name/out.log
  local cpu=$1 name=$2
  shift 2
  taskset -c "$cpu" "$@" >>"$WORK/$name/out.log" 2>&1 &
  STARTED=$!
  own "$STARTED"
}

note() { echo "$*" >>"$LOG"; }
say() { echo "$*" | tee -a "$LOG" >&2; }

# ------------------------------------------------------------------------------ measuring
user_sys_of() { # "utime stime" of a process tree, in clock ticks (each stat covers its threads)
  local p su=0 ss=0 u s
  for p in $(descendants "$1"); do
    # fields after "(comm) ": 12 = utime, 13 = stime
    read -r u s < <(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12, $13}')
    su=$((su + ${u:-0}))
    ss=$((ss + ${s:-0}))
  done
  echo "$su $ss"
}
status_kb() { # field pid: a /proc/PID/status field (VmRSS, VmHWM) summed over the tree, in kB
  local p s=0 v
  for p in $(descendants "$2"); do
    v=$(awk -v f="$1:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
busy_ticks() { # user+nice+system+irq+softirq summed over all CPUs
  awk '/^cpu[0-9]+ /{b += $2 + $3 + $4 + $7 + $8} END{print b}' /proc/stat
}
free_ports() { # N distinct ports free on 127.0.0.1 for both TCP and UDP (h3 shares the TLS port)
  python3 - "$1" <<'PY'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", t.getsockname()[1]))
    except OSError:
        t.close()
        continue
    held += [t, u]
    ports.append(t.getsockname()[1])
print(" ".join(map(str, ports)))
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
    a=$(busy_ticks)
    sleep 1
    b=$(busy_ticks)
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
nginx_prelude() { # $1 = directory: one worker, no access log, long keep-alive; NGINX_HTTP_EXTRA
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
  local line
  for line in ${NGINX_HTTP_EXTRA[@]+"${NGINX_HTTP_EXTRA[@]}"}; do echo "  $line"; done
}
listen_lines() { # line...: each as a directive of a server block
  local line
  for line in "$@"; do echo "    $line"; done
}

write_backend_conf() { # [listen line...]: return 200 with a 13-byte body; stub_status apart
  local d=$WORK/backend
  mkdir -p "$d"
  {
    nginx_prelude "$d"
    cat <<EOF
  default_type text/plain;
  server {
    listen 127.0.0.1:$BACKEND_H1 backlog=4096;
$(listen_lines "$@")
    location / { return 200 "Hello, World!"; }
  }
  # Its own port, so that the script's status requests never mix with the proxies'.
  server {
    listen 127.0.0.1:$STATUS_PORT;
    location / { stub_status; }
  }
}
EOF
  } >"$d/nginx.conf"
}

write_nginx_proxy_conf() { # dir h1-port [listen line...]: nginx proxying to the backend's h1
  local d=$1 port=$2
  shift 2
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
    listen 127.0.0.1:$port backlog=4096;
$(listen_lines "$@")
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  } >"$d/nginx.conf"
}

caddy_globals() { # http-port https-port: a Caddyfile's global options (no admin, no trust store)
  # The ports are spare ones from the kernel, so that nothing would ever try 80 or 443.
  printf '{\n\tadmin off\n\tskip_install_trust\n\tauto_https disable_redirects\n'
  printf '\thttp_port %s\n\thttps_port %s\n}\n' "$1" "$2"
}
caddy_site() { # address [directive...]: a site proxying to the backend's h1, pooled keep-alive
  local d
  printf '\n%s {\n\tbind 127.0.0.1\n' "$1"
  shift
  for d in "$@"; do printf '\t%s\n' "$d"; done
  printf '\treverse_proxy 127.0.0.1:%s {\n\t\ttransport http {\n\t\t\tkeepalive 120s\n' \
    "$BACKEND_H1"
  printf '\t\t\tkeepalive_idle_conns 1024\n\t\t\tkeepalive_idle_conns_per_host 1024\n'
  printf '\t\t}\n\t}\n}\n'
}

start_backend() { # [port...]: starts the backend (conf already written), waits for its ports
  local p
  start_on_cpu "$LOAD_CPU" backend nginx -p "$WORK/backend" -e "$WORK/backend/error.log" \
    -c "$WORK/backend/nginx.conf"
  BACKEND_PID=$STARTED
  for p in "$BACKEND_H1" "$@" "$STATUS_PORT"; do wait_listen "$p" "$BACKEND_PID" || return 1; done
}

proxy_up() { # name port...: did the proxy $PROXY_PID come up on the ports, on loopback alone?
  local n=$1 p bad where
  shift
  where="127.0.0.1:$1${2:+ and :$2}"
  for p in "$@"; do
    if ! wait_listen "$p" "$PROXY_PID"; then
      say "!! $n did not listen on $where; its output:"
      tail -n 20 "$WORK/$n/out.log" "$WORK/$n/error.log" 2>/dev/null | tee -a "$LOG" >&2
      stop_pid "$PROXY_PID"
      return 1
    fi
  done
  sleep "${PROXY_SETTLE:-0.3}" # let it finish starting (nginx's worker, Caddy's h3 listener)
  bad=$(loopback_only "$PROXY_PID")
  if [ -n "$bad" ]; then
    say "!! $n listens beyond 127.0.0.1, stopping it: $bad"
    stop_pid "$PROXY_PID"
    return 1
  fi
}
proxy_facts() { # name: the proxy's pids, threads and CPU affinity, for the raw log
  echo "$1 pid $PROXY_PID tree [$(descendants "$PROXY_PID" | paste -sd' ' -)]" \
    "threads $(find "/proc/$PROXY_PID/task" -mindepth 1 -maxdepth 1 | wc -l)" \
    "affinity $(taskset -pc "$PROXY_PID" | awk '{print $NF}')"
}

# ------------------------------------------------------------------------------ one load
run_bench() { # url [hsp-bench arg...]: one bounded closed- or open-loop load from CPU $LOAD_CPU
  local url=$1 limit
  shift
  # `timeout` is the backstop should hsp-bench itself hang: warm-up + duration + 30 s.
  limit=$(awk -v w="$WARM" -v d="$DUR" 'BEGIN{print int(w + d + 30)}')
  taskset -c "$LOAD_CPU" timeout -k 5 "$limit" \
    "$HSP_BENCH" "$url" -c "$CONNS" -d "$DUR" -w "$WARM" --json "$@" \
    >"$BENCH_OUT" 2>"$WORK/bench.err"
}

measure_once() { # who proto url [extra]: one load (the script's bench); record -> attempt.json
  local who=$1 proto=$2 url=$3
  shift 3
  quiet_gate
  local pu0=0 ps0=0 pu1=0 ps1=0 b0 b1 m0 m1 r0 r1 t0 t1 lg lp peak=0
  [ -n "$PROXY_PID" ] && read -r pu0 ps0 < <(user_sys_of "$PROXY_PID")
  read -r b0 < <(user_sys_of "$BACKEND_PID" | awk '{print $1 + $2}')
  m0=$(busy_ticks)
  r0=$(backend_requests)
  t0=$(date +%s.%N)
  # In a subshell so that `times` reports hsp-bench's CPU (its children's) for the accounting.
  (
    bench "$proto" "$url" "$@"
    echo "$?" >"$WORK/bench.rc"
    times >"$WORK/bench.times"
  ) &
  lp=$!
  own "$lp"
  wait "$lp"
  disown_pid "$lp"
  t1=$(date +%s.%N)
  r1=$(backend_requests)
  m1=$(busy_ticks)
  read -r b1 < <(user_sys_of "$BACKEND_PID" | awk '{print $1 + $2}')
  if [ -n "$PROXY_PID" ]; then
    read -r pu1 ps1 < <(user_sys_of "$PROXY_PID")
    peak=$(status_kb VmHWM "$PROXY_PID")
  fi
  lg=$(awk 'NR == 2 {split($1, u, /[ms]/); split($2, s, /[ms]/);
    printf "%d", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * '"$HZ"'}' "$WORK/bench.times")
  { cat "$BENCH_OUT"; echo "---"; cat "$WORK/bench.err"; } >>"$LOG"
  python3 - "$BENCH_OUT" "$WORK/attempt.json" "$who" "$proto" "$url" "$*" \
    "$(cat "$WORK/bench.rc")" "$WORK/bench.err" "$HZ" "$t0" "$t1" "$pu0" "$ps0" "$pu1" "$ps1" \
    "$b0" "$b1" "${lg:-0}" "$m0" "$m1" "${r0:-0}" "${r1:-0}" "$peak" "$PROXY_PID" <<'PY'
import json, sys
(bench_path, out, who, proto, url, args, rc, err_path, hz, t0, t1, pu0, ps0, pu1, ps1, b0, b1,
 lg, m0, m1, r0, r1, peak, proxy_pid) = sys.argv[1:]
try:
    bench = json.load(open(bench_path))
except Exception:
    bench = None
hz = int(hz)
wall = float(t1) - float(t0)
pu, ps = int(pu1) - int(pu0), int(ps1) - int(ps0)
proxy = pu + ps
busy = int(m1) - int(m0)
# The second stub_status request counts itself.
served = max(0, int(r1) - int(r0) - 1)
rec = {
    "who": who, "proto": proto, "url": url, "args": args, "rc": int(rc or -1),
    "stderr": open(err_path, errors="replace").read()[-300:],
    "bench": bench, "backend_served": served, "wall_s": round(wall, 3),
    "proxy_user_ticks": pu, "proxy_sys_ticks": ps, "hz": hz, "peak_rss_kb": int(peak),
    "foreign_pct": round(max(0.0, 100.0 * (busy - proxy - (int(b1) - int(b0)) - int(lg)) / hz
                             / wall), 1),
    "proxy_core_pct": round(100.0 * proxy / hz / wall, 1),
}
if proxy_pid and served:
    rec["cpu_us_per_req"] = round(proxy / hz * 1e6 / served, 2)
    rec["user_us_per_req"] = round(pu / hz * 1e6 / served, 2)
    rec["sys_us_per_req"] = round(ps / hz * 1e6 / served, 2)
json.dump(rec, open(out, "w"))
PY
}

measure_best() { # who proto url [extra]: up to MAX_TRIES loads; the least disturbed -> best.json
  local try best_f=999999 f
  for try in $(seq "$MAX_TRIES"); do
    measure_once "$@"
    f=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["foreign_pct"]))' \
      "$WORK/attempt.json")
    if [ "$f" -lt "$best_f" ]; then
      best_f=$f
      cp "$WORK/attempt.json" "$WORK/best.json"
    fi
    [ "$f" -le "$FOREIGN_MAX" ] && break
    note "[$1 $2] attempt $try disturbed (others used ${f}% of a core)"
  done
  MEASURE_TRIES=$try
}

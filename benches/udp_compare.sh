#!/bin/bash
# UDP echo, server against server, interleaved rounds: echo-reactor (this
# build), optionally an older build, the tokio UDP echo
# (examples/tokio_udp_echo.rs) and a minimal C loop
# (benches/support/udp_echo.c, built here with cc; skipped, loudly, without
# one). Server on CPU 0, client (echo-bench) on CPU 1; a fresh server per
# run. Prints one line per run: datagrams echoed per second, the server's
# CPU seconds (utime + stime from /proc, over the client's whole run) and
# datagrams per server CPU second, loss, latency.
#
#   cargo build --release --bins --example tokio_udp_echo
#   benches/udp_compare.sh ROUNDS SECS SIZE DEPTH [CONNS]
#   OLD=/tmp/udp-before/echo-reactor benches/udp_compare.sh 3 5 64 16
#   CLIENT_EXTRA=--udp-offload SERVERS="new tokio" benches/udp_compare.sh 3 5 64 16
#   SERVER_EXTRA="--udp-batch 8" SERVERS=new benches/udp_compare.sh 1 5 64 16
set -u
rounds=$1 secs=$2 size=$3 depth=$4 conns=${5:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
NEW=$root/target/release/echo-reactor
BENCH=$root/target/release/echo-bench
TOK=$root/target/release/examples/tokio_udp_echo
OLD=${OLD:-}
servers=${SERVERS:-${OLD:+old} new tokio c}
C=$root/target/udp_echo_c
if [[ " $servers " == *" c "* ]]; then
  if ! command -v cc >/dev/null || ! cc -O2 -o "$C" "$root/benches/support/udp_echo.c"; then
    echo "SKIPPED: the C UDP loop (no working cc)" >&2
    servers=${servers//c/}
  fi
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$rounds"); do
  for s in $servers; do
    port=$((20000 + RANDOM % 20000))
    case $s in
      old) taskset -c 0 "$OLD" --listen 127.0.0.1:0 --udp 127.0.0.1:$port >"$out/srv" 2>"$out/err" & ;;
      new) taskset -c 0 "$NEW" --listen 127.0.0.1:0 --udp 127.0.0.1:$port ${SERVER_EXTRA:-} >"$out/srv" 2>"$out/err" & ;;
      tokio) taskset -c 0 "$TOK" --listen 127.0.0.1:$port >"$out/srv" 2>"$out/err" & ;;
      c) taskset -c 0 "$C" 127.0.0.1 $port >"$out/srv" 2>"$out/err" & ;;
    esac
    pid=$!
    for _ in $(seq 100); do grep -q "udp://" "$out/srv" 2>/dev/null && break; sleep 0.05; done
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    taskset -c 1 "$BENCH" --udp --json -c "$conns" -s "$size" -d "$depth" -t "$secs" ${CLIENT_EXTRA:-} \
      127.0.0.1:$port >"$out/json" 2>"$out/cli"
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    hz=$(getconf CLK_TCK)
    kill -TERM $pid; wait $pid 2>/dev/null
    python3 - "$s" "$r" "$size" "$t0" "$t1" "$hz" "$out/json" <<'PY'
import json, sys
s, r, size, t0, t1, hz, path = sys.argv[1:]
j = json.load(open(path))
if "messages" not in j:
    print(f"{s:6} round={r} FAILED {j.get('error')}")
    sys.exit(0)
cpu = (int(t1) - int(t0)) / int(hz)
per = j["messages"] / cpu if cpu else 0
print(f"{s:6} round={r} size={size} echoes/s={j['req_per_s']:.0f} server_cpu_s={cpu:.2f} "
      f"dgrams_per_cpu_s={per:.0f} lost={j['udp']['lost']} "
      f"p50_us={j['latency_us']['p50']:.0f} p99_us={j['latency_us']['p99']:.0f}")
PY
  done
done

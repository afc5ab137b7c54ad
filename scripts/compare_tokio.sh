#!/usr/bin/env bash
# Interleaved comparison of echo-reactor and the tokio current_thread echo
# server (examples/tokio_echo.rs), driven by echo-bench.
#
#   scripts/compare_tokio.sh [CONNECTIONS] [SIZE] [SECONDS] [ROUNDS]
#
# Server on CPU 0, client on CPU 1 (needs 2 CPUs and taskset). For each run:
# req/s from echo-bench, server CPU (utime+stime from /proc/PID/stat) per
# echo, the user-space part of it, and how busy the server core was (a
# req/s ratio means little unless the server core is near saturation).
# Prints one line per run and the medians. Needs python3 for the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-100}; S=${2:-64}; T=${3:-8}; R=${4:-5}
cargo build --release --quiet --bins --example tokio_echo
BENCH=target/release/echo-bench
HZ=$(getconf CLK_TCK)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

stat_field() { awk -v f="$2" '{ sub(/^.*\) /, ""); print $(f - 2) }' "/proc/$1/stat"; }

run() {
  local name=$1; shift
  taskset -c 0 "$@" --listen 127.0.0.1:0 >"$OUT/listen" 2>/dev/null &
  local pid=$!
  local addr=""
  for _ in $(seq 50); do
    addr=$(sed -n 's|^listening on tcp://||p' "$OUT/listen" | head -1)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  local u0 s0 u1 s1 w0 w1
  u0=$(stat_field $pid 14); s0=$(stat_field $pid 15); w0=$(date +%s.%N)
  taskset -c 1 $BENCH -c "$C" -s "$S" -t "$T" --json "$addr" >"$OUT/json" 2>/dev/null
  u1=$(stat_field $pid 14); s1=$(stat_field $pid 15); w1=$(date +%s.%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$name" "$OUT/json" $((u1 - u0)) $((s1 - s0)) "$w0" "$w1" "$HZ" "$OUT/rows" <<'PY'
import json, sys
name, path, ut, st, w0, w1, hz, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
r = json.load(open(path))
n = r["messages"]
row = {"server": name, "rps": r["req_per_s"], "cpu_us": (ut + st) / hz * 1e6 / n,
       "user_us": ut / hz * 1e6 / n, "busy": (ut + st) / hz / (w1 - w0) * 100,
       "p50": r["latency_us"]["p50"], "p99": r["latency_us"]["p99"], "errors": r["errors_total"]}
open(rows, "a").write(json.dumps(row) + "\n")
print(f"{name:8s} {row['rps']:9.0f} req/s  {row['cpu_us']:5.2f} us CPU/echo (user {row['user_us']:4.2f})  "
      f"server core {row['busy']:5.1f}% busy  p50 {row['p50']:.0f} us  p99 {row['p99']:.0f} us  errors {row['errors']}")
PY
}

echo "# $C connections x $S B ping-pong, $T s per run, $R rounds, $(nproc) CPUs, $(date -u +%F)"
echo
for _ in $(seq "$R"); do
  run reactor target/release/echo-reactor
  run tokio target/release/examples/tokio_echo
done
python3 - "$OUT/rows" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| server | req/s (median) | server CPU per echo, us (median) | of which user | server core busy |")
print("| --- | ---: | ---: | ---: | ---: |")
for name in ("reactor", "tokio"):
    rs = [r for r in rows if r["server"] == name]
    med = lambda k: statistics.median(r[k] for r in rs)
    print(f"| {name} | {med('rps'):,.0f} | {med('cpu_us'):.2f} | {med('user_us'):.2f} | {med('busy'):.0f}% |")
PY

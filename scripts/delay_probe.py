#!/usr/bin/env python3
"""Hand-run check of --delay: N connections ping-pong ROUNDS 64-byte
messages each; prints the echo latency (send to whole echo, monotonic
clock) and the server's CPU meanwhile.

    target/release/echo-reactor --listen 127.0.0.1:17322 --delay 200 &
    python3 scripts/delay_probe.py 127.0.0.1:17322 PID 1000 10

The client's own scheduling is in the figures (a Python loop over 1,000
sockets): an echo measured a little under the delay was sent by the
client a little before it took its timestamp.
"""
import selectors, socket, sys, time

host, port = sys.argv[1].rsplit(":", 1)
pid, n, rounds = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def cpu_ticks():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])

sel = selectors.DefaultSelector()
conns = [socket.create_connection((host, int(port))) for _ in range(n)]
start_ticks, start = cpu_ticks(), time.monotonic()
sent, got, done, lat = {}, {}, {}, []
for s in conns:
    s.setblocking(False)
    s.sendall(b"x" * 64)
    sent[s], got[s], done[s] = time.monotonic(), 0, 0
    sel.register(s, selectors.EVENT_READ)
deadline = time.monotonic() + 60
while len(lat) < n * rounds and time.monotonic() < deadline:
    for key, _ in sel.select(1):
        s = key.fileobj
        got[s] += len(s.recv(4096))
        while got[s] >= 64:
            got[s] -= 64
            lat.append(time.monotonic() - sent[s])
            done[s] += 1
            if done[s] < rounds:
                sent[s] = time.monotonic()
                s.send(b"x" * 64)
elapsed, ticks = time.monotonic() - start, cpu_ticks() - start_ticks
lat.sort()
q = lambda p: 1000 * lat[int(p * (len(lat) - 1))]
print(f"{len(lat)} echoes in {elapsed:.1f} s: min {q(0):.1f} ms, p1 {q(0.01):.1f}, "
      f"p50 {q(0.5):.1f}, p99 {q(0.99):.1f}, max {q(1):.1f}; "
      f"server CPU {ticks / 100:.2f} s ({100 * ticks / 100 / elapsed:.1f}% of a core)")

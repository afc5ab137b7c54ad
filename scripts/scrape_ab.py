#!/usr/bin/env python3
# Does scraping /metrics every 100 ms change the echo path? Interleaved A/B
# (docs/metrics.md): 100 clients x 64 B ping-pong against one server with
# --metrics, ROUNDS rounds each with and without a scraper; req/s from
# echo-bench's JSON, server user-space CPU per echo from /proc/PID/stat.
# Run: python3 scripts/scrape_ab.py target/release/echo-reactor target/release/echo-bench [ROUNDS] [SECS]
import json, os, socket, subprocess, sys, threading, time

SERVER, BENCH = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
SECS = int(sys.argv[4]) if len(sys.argv) > 4 else 10
ECHO, METRICS = 7441, 7442

def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12])  # utime, stime

def scraper(stop, count):
    while not stop.is_set():
        s = socket.create_connection(("127.0.0.1", METRICS))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:40]
        count[0] += 1
        stop.wait(0.1)

srv = subprocess.Popen(["taskset", "-c", "0", SERVER, "--listen", f"127.0.0.1:{ECHO}",
                        "--metrics", f"127.0.0.1:{METRICS}"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
srv.stdout.readline()
time.sleep(0.3)
rows = []
try:
    for r in range(ROUNDS):
        for scrape in (False, True):
            stop, count = threading.Event(), [0]
            t = threading.Thread(target=scraper, args=(stop, count))
            if scrape:
                t.start()
            u0, s0 = ticks(srv.pid)
            out = subprocess.run(["taskset", "-c", "1", BENCH, f"127.0.0.1:{ECHO}", "-c", "100",
                                  "-s", "64", "-t", str(SECS), "--json"],
                                 capture_output=True, text=True, check=True).stdout
            u1, s1 = ticks(srv.pid)
            stop.set()
            if scrape:
                t.join()
            rep = json.loads(out)
            echoes = rep["messages"]
            hz = os.sysconf("SC_CLK_TCK")
            row = (scrape, rep["req_per_s"], (u1 - u0) / hz / echoes * 1e9, count[0])
            rows.append(row)
            print(f"round {r+1} {'scraped' if scrape else 'alone  '}: {row[1]:,.0f} req/s, "
                  f"user {row[2]:.0f} ns/echo, {row[3]} scrapes", flush=True)
finally:
    srv.terminate()
    srv.wait()
for scrape in (False, True):
    sel = sorted(r for r in rows if r[0] == scrape)
    reqs = sorted(r[1] for r in sel)
    user = sorted(r[2] for r in sel)
    print(f"{'scraped' if scrape else 'alone  '}: median {reqs[len(reqs)//2]:,.0f} req/s, "
          f"median user {user[len(user)//2]:.0f} ns/echo")

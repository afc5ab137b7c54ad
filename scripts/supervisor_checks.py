#!/usr/bin/env python3
"""Hand-run measurements of the master (`--workers`), loopback only.

    python3 scripts/supervisor_checks.py metrics BINARY [SECONDS]
        --workers 2 --metrics: 32 idle connections and 32 that pipeline
        2,000 requests each and never read are held open; a fresh scrape
        every 0.5 s for SECONDS (60): how long each took, and the master's
        thread count before and after.

    python3 scripts/supervisor_checks.py stopped BINARY
        --workers 4: one worker is SIGSTOPped while a client connects and
        echoes every 50 ms; how long until the master killed it, until its
        slot served again, and the longest any client waited.

BINARY is a release build (target/release/echo-reactor). Bounded in time
and count; every server it starts is stopped.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def start(binary, args):
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUST_LOG": "info"},
    )
    lines = [proc.stdout.readline()]
    log = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    return proc, lines, log


def addr_of(line):
    m = re.search(r"://([\d.]+):(\d+)", line)
    return (m.group(1), int(m.group(2)))


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"Threads:\s+(\d+)", f.read()).group(1))


def wait_log(log, needle, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(needle in line for line in log):
            return True
        time.sleep(0.02)
    return False


def scrape(addr):
    t = time.monotonic()
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    ok = data.startswith(b"HTTP/1.1 200")
    return ok, time.monotonic() - t


def metrics(binary, seconds=60):
    proc, lines, log = start(binary, ["--workers", "2", "--metrics", "127.0.0.1:0"])
    try:
        time.sleep(0.5)
        lines += [proc.stdout.readline()]
        metrics_addr = addr_of([l for l in lines if "(metrics)" in l][0])
        wait_log(log, "worker 1 (pid")
        before = threads(proc.pid)
        idle = [socket.create_connection(metrics_addr) for _ in range(32)]
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
        pushers = []
        for _ in range(32):
            s = socket.create_connection(metrics_addr)
            s.setblocking(False)
            try:
                s.send(request)
            except BlockingIOError:
                pass
            pushers.append(s)
        times, failures = [], 0
        end = time.time() + seconds
        while time.time() < end:
            try:
                ok, took = scrape(metrics_addr)
            except OSError:
                ok, took = False, 10.0
            failures += not ok
            times.append(took)
            time.sleep(0.5)
        after = threads(proc.pid)
        times.sort()
        print(
            f"metrics: {len(times)} scrapes over {seconds} s beside 32 idle and 32 "
            f"non-reading connections: {failures} failed; median "
            f"{times[len(times) // 2] * 1000:.1f} ms, slowest {times[-1] * 1000:.1f} ms; "
            f"master threads {before} before, {after} after"
        )
        for s in idle + pushers:
            s.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def echo(addr, timeout=30):
    t = time.monotonic()
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(b"ping")
        data = b""
        while len(data) < 4:
            chunk = s.recv(4)
            if not chunk:
                raise OSError("closed")
            data += chunk
    return time.monotonic() - t


def stopped(binary):
    proc, lines, log = start(binary, ["--workers", "4"])
    try:
        addr = addr_of(lines[0])
        wait_log(log, "worker 3 (pid")
        pids = [int(m.group(1)) for l in log for m in [re.search(r"worker \d \(pid (\d+)\) serving", l)] if m]
        victim = pids[1]
        waits, errors = [], []
        stop = threading.Event()

        def client():
            while not stop.is_set():
                try:
                    waits.append(echo(addr))
                except OSError as e:
                    errors.append(str(e))
                time.sleep(0.05)

        clients = [threading.Thread(target=client) for _ in range(8)]
        for c in clients:
            c.start()
        time.sleep(1)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        wait_log(log, f"(pid {victim}) has not turned its loop")
        killed = time.monotonic() - t0
        wait_log(log, "restarting it in")
        deadline = time.time() + 20
        while sum(" serving" in l for l in log) < 5 and time.time() < deadline:
            time.sleep(0.01)
        replaced = time.monotonic() - t0
        time.sleep(2)
        stop.set()
        for c in clients:
            c.join()
        waits.sort()
        print(
            f"stopped: worker killed {killed:.2f} s after SIGSTOP, its slot served again "
            f"after {replaced:.2f} s; {len(waits)} client echoes, {len(errors)} errors, "
            f"longest wait {waits[-1]:.2f} s, median {waits[len(waits) // 2] * 1000:.1f} ms"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    what, binary = sys.argv[1], sys.argv[2]
    if what == "metrics":
        metrics(binary, int(sys.argv[3]) if len(sys.argv) > 3 else 60)
    elif what == "stopped":
        stopped(binary)
    else:
        sys.exit(__doc__)

#!/usr/bin/env python3
"""Hand-run check: does half a frame waiting on a full budget spin the loop?

    python3 scripts/half_frame_spin.py BINARY BACKEND

Starts BINARY (a release echo-reactor) on 127.0.0.1 in frame mode with the
smallest budget, fills the budget with 20 clients that send whole frames
and never read their answers, then sends 100 bytes of a 1,000-byte frame
and counts the server's CPU ticks (/proc/PID/stat) over the next 5 s.
Loopback only; the server is killed at the end.
"""

import re
import socket
import struct
import subprocess
import sys
import time


def main(binary, backend):
    server = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--backend", backend, "--mode", "frame",
         "--max-buffered", "1048576", "--sndbuf", "4096", "--max-frame", "262144"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        m = re.search(r"://([\d.]+):(\d+)", server.stdout.readline())
        addr = (m.group(1), int(m.group(2)))

        def ticks():
            with open(f"/proc/{server.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        pushers = []
        for i in range(20):
            s = socket.create_connection(addr)
            s.setblocking(False)
            body = bytes([i]) * 200_000
            one = struct.pack(">I", len(body)) + body
            for _ in range(3):
                try:
                    s.send(one)
                except BlockingIOError:
                    pass
            pushers.append(s)
        time.sleep(2)
        half = socket.create_connection(addr)
        half.sendall(struct.pack(">I", 1000) + b"x" * 100)
        time.sleep(0.5)
        before = ticks()
        time.sleep(5)
        print(f"{backend}: {ticks() - before} CPU ticks in 5 s with half a frame waiting")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

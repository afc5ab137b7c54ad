#!/usr/bin/env python3
# Kernel send queues (docs/memory.md): 100 clients push and never read; prints the
# server-side Send-Q total (ss) and VmRSS. Run:
#   python3 scripts/memory_send_queues.py target/release/echo-reactor 7951 [--sndbuf auto]
import socket, subprocess, time, sys
BIN=sys.argv[1]; PORT=int(sys.argv[2]); extra=sys.argv[3:]
p=subprocess.Popen([BIN,"--listen",f"127.0.0.1:{PORT}"]+extra,stdout=subprocess.PIPE,stderr=subprocess.DEVNULL)
p.stdout.readline()
socks=[]; chunk=b"x"*65536
for i in range(100):
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1<<20)
    s.connect(("127.0.0.1",PORT)); s.setblocking(False); socks.append(s)
t=time.time()
while time.time()-t<6:
    for s in socks:
        try: s.send(chunk)
        except BlockingIOError: pass
out=subprocess.run(["ss","-Htn",f"sport = :{PORT}"],capture_output=True,text=True).stdout
q=sum(int(l.split()[2]) for l in out.splitlines() if l.strip())
rss=int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1])
print(f"{' '.join(extra) or 'default'}: 100 non-reading clients: server-side Send-Q total {q/2**20:.1f} MiB, server VmRSS {rss} kB")
p.terminate(); p.wait()

#!/usr/bin/env python3
# Timers die with their connection (docs/memory.md): N connect/reset cycles against
# --idle-timeout 3600; prints the VmRSS growth. Run:
#   python3 scripts/memory_timer_churn.py target/release/echo-reactor 300000 7801
import socket, struct, sys, subprocess, time, os
BIN=sys.argv[1]; N=int(sys.argv[2]); PORT=int(sys.argv[3])
p=subprocess.Popen([BIN,"--listen",f"127.0.0.1:{PORT}","--idle-timeout","3600"],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL)
p.stdout.readline()
def rss(): 
    return int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1])
time.sleep(0.3); r0=rss(); t=time.time()
lin=struct.pack("ii",1,0)
for i in range(N):
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, lin)
    s.connect(("127.0.0.1",PORT)); s.close()
time.sleep(1); r1=rss()
print(f"{os.path.basename(BIN)}: {N} connect/reset cycles in {time.time()-t:.1f} s; VmRSS {r0} -> {r1} kB (+{(r1-r0)/1024:.1f} MiB)")
p.terminate(); p.wait()

#!/usr/bin/env python3
# Partial frames (docs/memory.md): three waves of 1,000 clients each sending 900 KiB of
# a 1 MiB frame, closed after 4 s; prints VmRSS peak and after, idle CPU, the counters.
# Run: ulimit -n 20000; python3 scripts/memory_frame_waves.py target/release/echo-reactor 7991 [--evict-after 1]
import socket, subprocess, time, sys, struct
BIN=sys.argv[1]; PORT=int(sys.argv[2])
p=subprocess.Popen([BIN,"--listen",f"127.0.0.1:{PORT}","--mode","frame"]+sys.argv[3:],stdout=subprocess.PIPE,stderr=subprocess.PIPE,text=True)
p.stdout.readline()
def rss(): return int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1])
r0=rss(); peak=r0
for wave in range(3):
    socks=[]
    for i in range(1000):
        s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536); s.connect(("127.0.0.1",PORT)); s.setblocking(False)
        socks.append([s, struct.pack(">I", 1<<20) + b"y"*(900*1024)])
    t=time.time()
    while time.time()-t<4:
        for e in socks:
            if e[1]:
                try: n=e[0].send(e[1][:65536]); e[1]=e[1][n:]
                except BlockingIOError: pass
                except (ConnectionResetError, BrokenPipeError): e[1]=b""
        peak=max(peak,rss())
    for e in socks: e[0].close()
    time.sleep(1)
    print(f"wave {wave}: peak VmRSS {peak} kB, after all closed {rss()} kB (start {r0} kB)")
import signal
c0=sum(int(x) for x in open(f'/proc/{p.pid}/stat').read().rsplit(')',1)[1].split()[11:13]); time.sleep(5); c1=sum(int(x) for x in open(f'/proc/{p.pid}/stat').read().rsplit(')',1)[1].split()[11:13]); print('server CPU ticks over 5 s with the attackers gone:', c1-c0)
p.send_signal(signal.SIGUSR1); time.sleep(0.5); p.terminate(); err=p.communicate()[1]; print([l[l.index("accepted"):][:120] for l in err.splitlines() if " stats: " in l][0])

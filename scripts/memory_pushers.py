#!/usr/bin/env python3
# Memory budget probe (docs/memory.md): N clients push 64 KiB writes for 8 s and never
# read; prints the server's VmRSS peak, checks a ping-pong client beside them, then
# reads everything back and checks every byte. Run (client RLIMIT_NOFILE must allow N):
#   ulimit -n 20000; python3 scripts/memory_pushers.py target/release/echo-reactor 2000 7803
import socket, subprocess, time, sys, os, re, signal
BIN=sys.argv[1]; N=int(sys.argv[2]); PORT=int(sys.argv[3]); extra=sys.argv[4:]
p=subprocess.Popen([BIN,"--listen",f"127.0.0.1:{PORT}"]+extra,stdout=subprocess.PIPE,stderr=subprocess.PIPE,text=True)
p.stdout.readline()
def rss(): return int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1])
r0=rss(); socks=[]
# Byte k of every connection's stream is k % 256, whatever size each send was.
ring=bytes(range(256))*257
for i in range(N):
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.bind((f"127.0.0.{1+i//20000}",0)); s.connect(("127.0.0.1",PORT)); s.setblocking(False); socks.append(s)
sent=[0]*N; peak=r0
t=time.time()
while time.time()-t<8:
    progress=False
    for i,s in enumerate(socks):
        try:
            off=sent[i]%256; n=s.send(ring[off:off+65536]); sent[i]+=n; progress=True
        except BlockingIOError: pass
    peak=max(peak,rss())
    if not progress: break
time.sleep(1); peak=max(peak,rss())
# a well-behaved client
w=socket.create_connection(("127.0.0.1",PORT)); w.settimeout(5); ok=0
t=time.time()
for k in range(2000):
    w.sendall(b"ping-%05d"%k); d=b""
    while len(d)<10: d+=w.recv(10-len(d))
    ok+= d==b"ping-%05d"%k
wt=time.time()-t
p.send_signal(signal.SIGUSR1); time.sleep(0.3)
print(f"{N} pushers sent {sum(sent)/2**20:.0f} MiB without reading; server VmRSS {r0} -> peak {peak} kB (+{(peak-r0)/1024:.1f} MiB); well-behaved: {ok}/2000 echoes in {wt:.2f} s")
# now the attackers read everything back and check
bad=0; got=[0]*N
for s in socks: s.setblocking(True); s.settimeout(10)
for i,s in enumerate(socks):
    s.shutdown(socket.SHUT_WR)
    buf=bytearray()
    while True:
        try:
            d=s.recv(1<<20)
        except TimeoutError:
            print("TIMEOUT conn",i,"got",len(buf),"of",sent[i]); print(subprocess.run(["ss","-tnmi",f"sport = :{PORT}","and","dport = :%d"%s.getsockname()[1]],capture_output=True,text=True).stdout); p.send_signal(signal.SIGUSR1); time.sleep(0.3); p.terminate(); print([l[-330:] for l in p.communicate()[1].splitlines() if "stats" in l][-2:]); sys.exit(1)
        if not d: break
        buf+=d
    got[i]=len(buf)
    exp=(ring*(sent[i]//len(ring)+1))[:sent[i]]
    if bytes(buf)!=exp: bad+=1
print(f"attackers read back: {sum(got)/2**20:.0f} MiB of {sum(sent)/2**20:.0f} MiB, {bad} connections with wrong bytes")
p.terminate(); err=p.communicate()[1]
print([l for l in err.splitlines() if " stats: " in l][-1][-260:])

#!/usr/bin/env python3
# The hostile-client checks behind docs/limits.md (run as root: a raw socket forges the
# UDP source): a datagram spoofed from the server's own address (CPU over the next 10 s),
# --max-connections-per-ip 100 against one host opening 1,000, and 50 clients that say
# exit and never close. Run: python3 scripts/attack_checks.py  (after cargo build --release)
import socket, struct, subprocess, time, os, re, sys
BIN=sys.argv[1] if len(sys.argv) > 1 else "target/release/echo-reactor"
def ticks(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return int(f[11])+int(f[12])
def start(args):
    p=subprocess.Popen([BIN]+args,stdout=subprocess.PIPE,stderr=subprocess.PIPE,text=True)
    lines=[p.stdout.readline().strip()]
    return p,lines
# 1. spoofed datagram
p,l=start(["--listen","127.0.0.1:0","--udp","127.0.0.1:7501"])
time.sleep(0.3)
raw=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)
udp=struct.pack("!HHHH",7501,7501,8+7,0)+b"loop me"
ip=struct.pack("!BBHHHBBH4s4s",0x45,0,0,0,0,64,17,0,socket.inet_aton("127.0.0.1"),socket.inet_aton("127.0.0.1"))
raw.sendto(ip+udp,("127.0.0.1",0))
time.sleep(0.2)
t0=ticks(p.pid); time.sleep(10); t1=ticks(p.pid)
c=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); c.settimeout(5); c.sendto(b"legit",("127.0.0.1",7501)); ok=c.recv(100)==b"legit"
tcpaddr=l[0].split("tcp://")[1].rsplit(":",1); s=socket.create_connection((tcpaddr[0],int(tcpaddr[1]))); s.sendall(b"tcp"); tok=s.recv(10)==b"tcp"; s.close()
print(f"1. spoofed datagram: server CPU ticks in next 10 s = {t1-t0} (of {10*os.sysconf('SC_CLK_TCK')}); udp client ok={ok}; tcp client ok={tok}")
p.terminate(); out=p.communicate()[1]; print("   ", re.search(r"final stats:.*",out).group(0)[:400])
# 2. per-ip
p,l=start(["--listen","127.0.0.1:7502","--max-connections-per-ip","100"])
time.sleep(0.3)
served=0; refused=0; socks=[]
for i in range(1000):
    s=socket.create_connection(("127.0.0.1",7502)); s.settimeout(5); s.sendall(b"x")
    d=s.recv(100)
    if d==b"x": served+=1; socks.append(s)
    else: refused+=1; s.close()
o=socket.socket(); o.bind(("127.0.0.2",0)); o.connect(("127.0.0.1",7502)); o.sendall(b"y"); other=o.recv(10)==b"y"
print(f"2. per-ip 100: one host opened 1000: served={served} refused={refused}; another host served={other}")
for s in socks: s.close()
o.close(); p.terminate(); out=p.communicate()[1]; print("   ", re.search(r"final stats:.*",out).group(0)[:200])
# 3. 50 exit clients
p,l=start(["--listen","127.0.0.1:7503","--mode","line","--stats-interval","0.1"])
time.sleep(0.3)
cl=[]
t=time.time()
for i in range(50):
    s=socket.create_connection(("127.0.0.1",7503)); s.sendall(b"exit\n"); cl.append(s)
import threading
log=[]
def rd():
    for line in p.stderr: log.append((time.time(),line))
threading.Thread(target=rd,daemon=True).start()
freed=None
while time.time()-t<20:
    act=[(ts,int(m.group(1))) for ts,ln in log for m in [re.search(r" stats: accepted=\d+ rejected=\d+ active=(\d+)",ln)] if m]
    if act and act[-1][1]==0 and any(a==50 for _,a in act): freed=act[-1][0]-t; break
    time.sleep(0.1)
print(f"3. 50 clients said exit and never closed: all slots free after {freed:.2f} s (no option set)")
p.terminate(); time.sleep(0.5)
print("   ", [ln.strip()[:160] for ts,ln in log if "final stats" in ln][:1])

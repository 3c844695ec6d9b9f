"""Crash loop: delivers a stream of messages over SMTP while the server is killed with
SIGKILL at random moments and restarted; at the end every message that got 250 must be
in the INBOX and in the relay queue, and the store must have opened every time without
repair. Usage: crash_loop.py BIN WORKDIR KILLS"""
import os, poplib, random, signal, smtplib, socket, subprocess, sys, threading, time

BIN, WORK, KILLS = sys.argv[1], sys.argv[2], int(sys.argv[3])
CONFIG = os.path.join(WORK, "understudy.toml")
with open(CONFIG, "w") as f:
    f.write(f'''hostname = "localhost"
data_dir = "{WORK}/data"
[listen]
pop3 = ["127.0.0.1:0"]
smtp = ["127.0.0.1:0"]
[auth]
plaintext_networks = ["127.0.0.0/8"]
[log]
level = "warn"
''')

def admin(*args, stdin=None):
    subprocess.run([BIN, "--config", CONFIG, *args], input=stdin, text=True, check=True, capture_output=True)

admin("domain", "add", "crash.example", "--relay-host", "127.0.0.1:9", "--monitoring", "false")
admin("user", "add", "anna@crash.example", "--password-stdin", stdin="Crash1password\n")

def start():
    p = subprocess.Popen([BIN, "--config", CONFIG, "serve"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ports = {}
    for line in p.stdout:
        line = line.strip()
        if line == "ready":
            return p, ports
        if line.startswith("listening "):
            _, service, addr = line.split(" ")
            ports[service] = int(addr.rsplit(":", 1)[1])
    raise SystemExit("server did not start (store did not open?)")

acked = []          # Message-IDs that got 250
lock = threading.Lock()
state = {"port": None, "stop": False, "sent": 0}

def sender():
    n = 0
    while not state["stop"]:
        port = state["port"]
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                while not state["stop"]:
                    mid = f"<crash-{n}@example.net>"
                    body = f"Subject: crash {n}\r\nMessage-ID: {mid}\r\n\r\n" + ("x" * 76 + "\r\n") * 25
                    n += 1
                    s.sendmail("x@example.net", ["anna@crash.example"], body.encode())
                    with lock:
                        acked.append(mid)  # only after 250
        except (OSError, smtplib.SMTPException) as e:
            if os.environ.get("VERBOSE"):
                print("send failed:", repr(e), file=sys.stderr)
            time.sleep(0.05)  # server killed: reconnect to the restarted one

server, ports = start()
state["port"] = ports["smtp"]
t = threading.Thread(target=sender, daemon=True)
t.start()
for kill in range(KILLS):
    time.sleep(random.uniform(0.2, 1.5))
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    server, ports = start()
    state["port"] = ports["smtp"]
time.sleep(1.0)
state["stop"] = True
t.join(timeout=15)
with lock:
    acked_ids = list(acked)

# Every acknowledged message is in the INBOX...
p = poplib.POP3("127.0.0.1", ports["pop3"], timeout=60)
p.user("anna@crash.example"); p.pass_("Crash1password")
count, _ = p.stat()
found = set()
for i in range(1, count + 1):
    for line in p.top(i, 0)[1]:
        if line.lower().startswith(b"message-id:"):
            found.add(line.split(b":", 1)[1].strip().decode())
p.quit()
os.kill(server.pid, signal.SIGTERM); server.wait()
if os.environ.get("VERBOSE"):
    print(subprocess.run([BIN, "--config", CONFIG, "queue", "list", "crash.example"], capture_output=True, text=True).stdout[:500])
missing = [m for m in acked_ids if m not in found]
# ...and in the relay queue.
queue = subprocess.run([BIN, "--config", CONFIG, "queue", "list", "crash.example"], capture_output=True, text=True, check=True).stdout
queued = sum(1 for line in queue.splitlines()[1:] if " relay " in f" {line} " and "crash.example" in line)
print(f"kills={KILLS} acknowledged={len(acked_ids)} in_inbox={len(found)} missing_from_inbox={len(missing)} "
      f"relay_queue_entries={queued} store_opened={KILLS + 1}/{KILLS + 1}")
if missing or queued < len(acked_ids):
    print("LOST:", missing[:10])
    sys.exit(1)

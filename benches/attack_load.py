"""Attackers and honest users at once (issue 19). While the attacks run, honest probes
measure, once a second each: a fresh IMAP login (LOGIN + LOGOUT of a user whose
password is cached), a NOOP on an IMAP session logged in before the attack, and an MX
delivery (one message over SMTP to a local user). The server's RSS is sampled too.

Attacks (each can be turned off with ATTACKS=...):
  flood    failed-login flood: FLOOD_CONNS connections from as many loopback addresses
           (127.0.x.y), each pipelining 9 wrong LOGINs, reconnecting when closed
  slow     slow readers: logged-in connections that FETCH 1:* BODY[] and never read
  literal  pre-auth literals: connections announcing a 20 MB non-synchronizing literal
           before login and sending it
  list     LIST "" "<1000 x *>Q" from logged-in connections, again and again

Usage: attack_load.py IMAP_PORT SMTP_PORT SERVER_PID SECONDS
Every loop is bounded in time and count; every socket has a time-out."""
import os, select, socket, statistics, sys, threading, time

IMAP, SMTP, PID, SECONDS = (int(a) for a in sys.argv[1:5])
ATTACKS = set(os.environ.get("ATTACKS", "flood slow literal list").split())
FLOOD_CONNS = int(os.environ.get("FLOOD_CONNS", "600"))
PROBE_TIMEOUT = 30.0
HONEST, ATTACKER, PASSWORD = "honest@bench.example", "mallory@bench.example", "Bench1password"
stop = threading.Event()
counts = {"guesses": 0, "slow": 0, "literal_bytes": 0, "lists": 0, "list_answers": 0}
lock = threading.Lock()


def bump(key, n=1):
    with lock:
        counts[key] += n


def connect(port, source=None, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    return s


def read_until(s, token, limit=PROBE_TIMEOUT):
    """Reads until `token` is in what came; returns it all (raises on time-out)."""
    s.settimeout(limit)
    buf = b""
    deadline = time.monotonic() + limit
    while token not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError(token)
        d = s.recv(65536)
        if not d:
            raise ConnectionError(f"closed before {token!r}")
        buf += d
    return buf


def imap_login(source=None, user=ATTACKER):
    s = connect(IMAP, source)
    read_until(s, b"\r\n")
    s.sendall(f"l LOGIN {user} {PASSWORD}\r\n".encode())
    read_until(s, b"l OK")
    return s


# --- attacks -------------------------------------------------------------------------

def flood_worker(index):
    source = f"127.0.{10 + index // 250}.{1 + index % 250}"
    n = 0
    while not stop.is_set():
        try:
            s = connect(IMAP, source, timeout=5)
            s.settimeout(5)
            s.recv(4096)
            s.sendall(b"".join(f"g{k} LOGIN guess{index}x{n}@bench.example Wrong{k}horse\r\n".encode()
                               for k in range(9)))
            bump("guesses", 9)
            n += 1
            # Read what comes until the server closes or the attack ends.
            while not stop.is_set():
                r, _, _ = select.select([s], [], [], 1)
                if r and not s.recv(65536):
                    break
            s.close()
        except OSError:
            time.sleep(0.2)


def slow_worker():
    try:
        s = imap_login()
        s.sendall(b"s SELECT INBOX\r\n")
        read_until(s, b"s OK")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"f FETCH 1:* BODY[]\r\n")
        bump("slow")
        while not stop.is_set():
            time.sleep(0.5)  # never reads
        s.close()
    except OSError:
        pass


def literal_worker(index):
    chunk = b"x" * 65536
    while not stop.is_set():
        try:
            s = connect(IMAP, f"127.0.5.{1 + index}", timeout=5)
            s.recv(4096)
            s.sendall(b"a LOGIN {20000000+}\r\n")
            sent = 0
            while sent < 20_000_000 and not stop.is_set():
                s.sendall(chunk)
                sent += len(chunk)
                bump("literal_bytes", len(chunk))
            while not stop.is_set():
                time.sleep(0.5)  # holds the connection
            s.close()
        except OSError:
            time.sleep(0.5)


def list_worker():
    try:
        s = imap_login()
        s.settimeout(2)
        pattern = b"*" * 1000 + b"Q"
        while not stop.is_set():
            s.sendall(b'l LIST "" "' + pattern + b'"\r\n')
            bump("lists")
            try:
                buf = b""
                while b"l " not in buf and not stop.is_set():
                    try:
                        buf += s.recv(65536)
                    except socket.timeout:
                        continue
                bump("list_answers")
            except OSError:
                break
        s.close()
    except OSError:
        pass


# --- honest probes -------------------------------------------------------------------

samples = {"login": [], "noop": [], "mx": []}
failures = {"login": 0, "noop": 0, "mx": 0}
rss = []


def probe(name, f):
    t0 = time.monotonic()
    try:
        f()
        samples[name].append(time.monotonic() - t0)
    except Exception:
        failures[name] += 1
        samples[name].append(PROBE_TIMEOUT)


def login_probe():
    s = connect(IMAP, "127.0.200.1", timeout=PROBE_TIMEOUT)
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {HONEST} {PASSWORD}\r\nb LOGOUT\r\n".encode())
    read_until(s, b"b OK")
    s.close()


def mx_probe(seq=[0]):
    seq[0] += 1
    s = connect(SMTP, "127.0.200.2", timeout=PROBE_TIMEOUT)
    read_until(s, b"\r\n")
    s.sendall(b"EHLO probe.example\r\nMAIL FROM:<probe@outside.example>\r\n"
              b"RCPT TO:<honest@bench.example>\r\nDATA\r\n")
    read_until(s, b"354")
    s.sendall(f"Subject: probe {seq[0]}\r\n\r\nhello\r\n.\r\nQUIT\r\n".encode())
    read_until(s, b"221")
    s.close()


def sample_rss():
    try:
        with open(f"/proc/{PID}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss.append(int(line.split()[1]) // 1024)
    except OSError:
        pass


def probes(seconds, label):
    for k in samples:
        samples[k].clear()
        failures[k] = 0
    rss.clear()
    try:
        honest = imap_login("127.0.200.3", HONEST)
        honest.sendall(b"s SELECT INBOX\r\n")
        read_until(honest, b"s OK")
    except OSError:
        honest = None  # every NOOP probe then counts as timed out
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        t_next = time.monotonic() + 1.0
        probe("login", login_probe)
        n += 1

        def noop():
            if honest is None:
                raise TimeoutError("the honest session could not log in")
            honest.sendall(f"n{n} NOOP\r\n".encode())
            read_until(honest, f"n{n} OK".encode())
        probe("noop", noop)
        probe("mx", mx_probe)
        sample_rss()
        time.sleep(max(0.0, t_next - time.monotonic()))
    if honest is not None:
        honest.close()
    parts = []
    for k in ("login", "noop", "mx"):
        v = sorted(samples[k])
        if not v:
            continue
        p50 = statistics.median(v)
        p95 = v[min(len(v) - 1, int(len(v) * 0.95))]
        fail = f" ({failures[k]} failed/timed out at {PROBE_TIMEOUT:.0f}s)" if failures[k] else ""
        parts.append(f"{k} p50 {p50 * 1000:.0f} ms p95 {p95 * 1000:.0f} ms max {v[-1] * 1000:.0f} ms{fail}")
    print(f"{label}: " + "; ".join(parts) + f"; server RSS max {max(rss, default=0)} MB", flush=True)


probes(min(10, SECONDS), "honest users, no attack")
threads = []
if "slow" in ATTACKS:
    threads += [threading.Thread(target=slow_worker, daemon=True) for _ in range(40)]
if "literal" in ATTACKS:
    threads += [threading.Thread(target=literal_worker, args=(i,), daemon=True) for i in range(20)]
if "list" in ATTACKS:
    threads += [threading.Thread(target=list_worker, daemon=True) for _ in range(4)]
for t in threads:
    t.start()
time.sleep(3)  # the logged-in attackers log in before the flood starts
if "flood" in ATTACKS:
    flood = [threading.Thread(target=flood_worker, args=(i,), daemon=True) for i in range(FLOOD_CONNS)]
    for t in flood:
        t.start()
time.sleep(2)
probes(SECONDS, f"honest users under attack ({' '.join(sorted(ATTACKS))})")
stop.set()
print(f"attack volume: {counts['guesses']} failed-login guesses sent, {counts['slow']} slow readers, "
      f"{counts['literal_bytes'] // 1_000_000} MB of pre-auth literals sent, "
      f"{counts['lists']} LIST bombs sent / {counts['list_answers']} answered", flush=True)

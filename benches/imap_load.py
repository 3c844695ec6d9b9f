"""Load generator for benches/imap.sh and benches/imap-idle.sh.

  fill-smtp PORT USERS MESSAGES            deliver MESSAGES to each userN@bench.example
  fill-maildir DIR USERS MESSAGES          write the same messages into Maildirs (Dovecot)
  warm HOST:PORT USERS [CA]                 log in once per user (fills auth caches)
  load NAME HOST:PORT USERS CLIENTS SECONDS [CA]
                                           mixed IMAP load; prints operations/s per command
  (warm and load take several HOST:PORT,HOST:PORT: client i uses address i mod n, so
  the same clients spread over the nodes of a cluster)
  idle PORT USERS CONNECTIONS PID          CONNECTIONS sessions in IDLE; prints PID's RSS

`load` runs CLIENTS processes, each repeating one session for SECONDS: LOGIN, SELECT
INBOX, 5 x (FETCH one message's FLAGS+BODY.PEEK[], STORE +FLAGS \\Seen), FETCH 1:*
(FLAGS) as a syncing client does, APPEND one message, UID STORE \\Deleted on it (UID from
APPENDUID), EXPUNGE, LOGOUT. Mailbox sizes stay steady. With CA the clients use implicit
TLS, otherwise plain IMAP (LOGIN allowed from loopback in the bench configs).
"""
import asyncio, imaplib, multiprocessing, os, random, smtplib, ssl, sys, time

PASSWORD = "Bench1password"


def message(i):
    return (
        "From: Sender %d <sender%d@example.net>\r\nTo: user@bench.example\r\n"
        "Subject: bench message %d\r\nMessage-ID: <bench-%d@example.net>\r\n"
        "Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        % (i % 50, i % 50, i, i) + ("line of text in a bench message body, " * 2 + "\r\n") * 60
    ).encode()


def fill_user(args):
    port, user, messages = args
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
        for i in range(messages):
            s.sendmail("sender@example.net", [f"user{user}@bench.example"], message(i))
    return messages


def fill_smtp(port, users, messages):
    start = time.time()
    with multiprocessing.Pool(min(users, 8)) as pool:
        n = sum(pool.map(fill_user, [(port, u, messages) for u in range(1, users + 1)]))
    took = time.time() - start
    print(f"filled {n} messages ({len(message(0))} bytes each) over SMTP in {took:.1f}s: {n / took:.0f} deliveries/s", flush=True)


def fill_maildir(root, users, messages):
    for u in range(1, users + 1):
        base = os.path.join(root, "bench.example", f"user{u}", "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        for i in range(messages):
            with open(os.path.join(base, "new", f"1795000000.M{i}P{u}.bench"), "wb") as f:
                f.write(message(i))
    print(f"filled {users * messages} messages into Maildirs", flush=True)


def connect(host, port, ca):
    if ca:
        return imaplib.IMAP4_SSL(host, port, ssl_context=ssl.create_default_context(cafile=ca), timeout=60)
    return imaplib.IMAP4(host, port, timeout=60)


def worker(args):
    host, port, users, seconds, ca, idx, start_at = args
    rnd = random.Random(idx)
    counts, times, errors = {}, {}, 0
    while time.time() < start_at:
        time.sleep(0.01)
    deadline = start_at + seconds

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        typ, data = fn(*a)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        counts[name] = counts.get(name, 0) + 1
        if typ not in ("OK", "BYE"):  # imaplib reports LOGOUT as BYE
            raise imaplib.IMAP4.error(f"{name}: {typ} {data}")
        return data

    sessions = 0
    while time.time() < deadline:
        user = 1 + (idx + sessions) % users
        try:
            t0 = time.perf_counter()
            m = connect(host, port, ca)
            times["connect"] = times.get("connect", 0.0) + time.perf_counter() - t0
            counts["connect"] = counts.get("connect", 0) + 1
            timed("login", m.login, f"user{user}@bench.example", PASSWORD)
            exists = int(timed("select", m.select, "INBOX")[0])
            for _ in range(5):
                n = str(rnd.randint(1, max(exists, 1)))
                timed("fetch", m.fetch, n, "(FLAGS BODY.PEEK[])")
                timed("store", m.store, n, "+FLAGS", "(\\Seen)")
            timed("fetch", m.fetch, "1:*", "(FLAGS)")
            reply = timed("append", m.append, "INBOX", None, None, message(rnd.randint(0, 10**6)))
            # The tagged reply carries [APPENDUID validity uid] (UIDPLUS, both servers).
            uid = reply[0].split(b"APPENDUID ", 1)[1].split()[1].rstrip(b"]").decode()
            timed("store", m.uid, "STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
            timed("expunge", m.expunge)
            timed("logout", m.logout)
            sessions += 1
        except (imaplib.IMAP4.error, OSError) as e:
            errors += 1
            if errors <= 3:
                print(f"client {idx}: {e!r}", file=sys.stderr, flush=True)
    return counts, times, errors, sessions


def warm_one(args):
    host, port, user, ca = args
    m = connect(host, port, ca)
    m.login(f"user{user}@bench.example", PASSWORD)
    m.logout()


def addresses(addr):
    return [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in addr.split(","))]


def warm(addr, users, ca):
    """One login per user first (on every address), so the credential caches are warm."""
    jobs = [(h, p, u, ca) for h, p in addresses(addr) for u in range(1, users + 1)]
    with multiprocessing.Pool(min(users, 8)) as pool:
        pool.map(warm_one, jobs)


def load(name, addr, users, clients, seconds, ca):
    addrs = addresses(addr)
    start_at = time.time() + 1.0
    jobs = [addrs[i % len(addrs)] + (users, seconds, ca, i, start_at) for i in range(clients)]
    with multiprocessing.Pool(clients) as pool:
        results = pool.map(worker, jobs)
    elapsed = time.time() - start_at
    counts, times = {}, {}
    for c, t, _, _ in results:
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
            times[k] = times.get(k, 0.0) + t[k]
    errors = sum(r[2] for r in results)
    sessions = sum(r[3] for r in results)
    total = sum(v for k, v in counts.items() if k != "connect")
    print(f"{name}: clients={clients} seconds={elapsed:.1f} sessions={sessions} errors={errors} "
          f"commands={total} commands/s={total / elapsed:.0f}", flush=True)
    for k in ["connect", "login", "select", "fetch", "store", "append", "expunge", "logout"]:
        if k in counts:
            print(f"{name}:   {k:8} {counts[k] / elapsed:8.1f} ops/s   mean {1000 * times[k] / counts[k]:7.2f} ms", flush=True)


async def idle_one(port, user, ready, hold):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    await reader.readline()
    writer.write(f"a LOGIN user{user}@bench.example {PASSWORD}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed before IDLE")
        if line.startswith((b"a NO", b"a BAD", b"b NO", b"b BAD", b"c NO", b"c BAD")):
            raise ConnectionError(line.decode().strip())
        if line.startswith(b"+"):
            break
    ready.append(1)
    await hold.wait()
    writer.write(b"DONE\r\nd LOGOUT\r\n")
    await writer.drain()
    writer.close()


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(l.split(":", 1) for l in f if ":" in l)
    return fields["VmRSS"].strip(), fields["VmHWM"].strip(), fields["Threads"].strip()


async def idle(port, users, connections, pid):
    ready, hold = [], asyncio.Event()
    print("server before: VmRSS %s, VmHWM %s, threads %s" % rss(pid), flush=True)
    start = time.time()
    tasks, errors = [], []
    # Open in waves so the listen backlog never overflows.
    for i in range(connections):
        tasks.append(asyncio.ensure_future(idle_one(port, 1 + i % users, ready, hold)))
        if i % 200 == 199:
            while len(ready) + sum(1 for t in tasks if t.done()) < i - 100:
                await asyncio.sleep(0.01)
    while len(ready) + sum(1 for t in tasks if t.done()) < connections:
        await asyncio.sleep(0.05)
        if time.time() - start > 300:
            break
    for t in tasks:
        if t.done() and t.exception():
            errors.append(repr(t.exception()))
    print(f"{len(ready)} connections logged in and in IDLE after {time.time() - start:.1f}s "
          f"({len(errors)} failed{': ' + errors[0] if errors else ''})", flush=True)
    await asyncio.sleep(2)
    print("server with %d in IDLE: VmRSS %s, VmHWM %s, threads %s" % ((len(ready),) + rss(pid)), flush=True)
    # tokio's blocking pool lets idle threads go after 10 s; what stays is per connection.
    await asyncio.sleep(12)
    print("server with %d in IDLE 14 s later: VmRSS %s, VmHWM %s, threads %s" % ((len(ready),) + rss(pid)), flush=True)
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "fill-smtp":
        fill_smtp(int(a[0]), int(a[1]), int(a[2]))
    elif cmd == "fill-maildir":
        fill_maildir(a[0], int(a[1]), int(a[2]))
    elif cmd == "warm":
        warm(a[0], int(a[1]), a[2] if len(a) > 2 else None)
    elif cmd == "load":
        load(a[0], a[1], int(a[2]), int(a[3]), float(a[4]), a[5] if len(a) > 5 else None)
    elif cmd == "idle":
        asyncio.run(idle(int(a[0]), int(a[1]), int(a[2]), int(a[3])))

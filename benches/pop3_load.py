"""Load generator for benches/pop3.sh: fills mailboxes over SMTP, then downloads them
with parallel poplib clients and prints the figures."""
import multiprocessing, poplib, smtplib, ssl, sys, time

BODY = ("Subject: bench\r\nFrom: a@example.net\r\n\r\n" + ("x" * 76 + "\r\n") * 50).encode()

def fill(port, users, messages):
    body = BODY
    start = time.time()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        for u in range(1, users + 1):
            for _ in range(messages):
                s.sendmail("a@example.net", [f"user{u}@bench.example"], body)
    n = users * messages
    print(f"filled {n} messages ({len(body)} bytes each) over SMTP in {time.time() - start:.1f}s: {n / (time.time() - start):.0f} deliveries/s")

def fill_maildir(root, users, messages):
    """The same messages written straight into Maildirs, for the Dovecot side."""
    import os
    for u in range(1, users + 1):
        base = os.path.join(root, "bench.example", f"user{u}", "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        for i in range(messages):
            with open(os.path.join(base, "new", f"1795000000.M{i}P{u}.bench"), "wb") as f:
                f.write(BODY)
    print(f"filled {users * messages} messages into Maildirs")

def worker(args):
    port, users, rounds, ca, idx = args
    ctx = ssl.create_default_context(cafile=ca)
    sessions = messages = 0
    for r in range(rounds):
        for u in range(idx, users + 1, 10) if users >= 10 else [1 + (idx + r) % users]:
            p = poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=60)
            p.user(f"user{u}@bench.example"); p.pass_("Bench1password")
            count, _ = p.stat()
            p.uidl()
            for n in range(1, count + 1):
                p.retr(n)
            p.quit()
            sessions += 1
            messages += count
    return sessions, messages

def load(port, users, clients, rounds, ca, name="understudy"):
    jobs = [(port, users, rounds, ca, 1 + i % max(users, 1)) for i in range(clients)]
    start = time.time()
    with multiprocessing.Pool(clients) as pool:
        results = pool.map(worker, jobs)
    elapsed = time.time() - start
    sessions = sum(r[0] for r in results); messages = sum(r[1] for r in results)
    print(f"{name}: clients={clients} sessions={sessions} messages={messages} elapsed={elapsed:.2f}s "
          f"sessions/s={sessions / elapsed:.1f} messages/s={messages / elapsed:.0f}")

if __name__ == "__main__":
    if sys.argv[1] == "fill":
        fill(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "fill-maildir":
        fill_maildir(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        load(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
             *(sys.argv[7:8]))

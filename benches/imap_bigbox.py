"""Big-mailbox IMAP benchmark client: fills one user's INBOX over SMTP, then times what
Outlook does on every sync of a large folder (SELECT, UID FETCH 1:* (FLAGS)) and what a
CONDSTORE client does instead (CHANGEDSINCE), then what a webmail does to show a page of
the folder (SORT by date and by subject, THREAD), printing seconds and the server's RSS.

    python3 imap_bigbox.py SMTP_PORT IMAP_PORT USER PASSWORD COUNT SERVER_PID
"""
import email.utils
import imaplib
import multiprocessing
import smtplib
import sys
import time


def message(i):
    # Dates out of arrival order, a reply to an earlier message now and then, a few
    # dozen senders and subjects: SORT and THREAD have real work to do.
    date = email.utils.formatdate(1_790_000_000 + (i * 7919) % 1_000_003 * 60)
    refs = f"References: <big{i // 3}@example.net>\r\n" if i % 3 else ""
    reply = "Re: " if i % 3 else ""
    return (
        f"From: Sender {i % 37} <sender{i % 37}@example.net>\r\nTo: {USER}\r\n"
        f"Subject: {reply}message {i - i % 3}\r\nMessage-ID: <big{i}@example.net>\r\n{refs}"
        f"Date: {date}\r\n\r\n"
        + "body line\r\n" * 20
    ).encode()


def fill(args):
    port, start, count = args
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
        for i in range(start, start + count):
            s.sendmail("sender@example.net", [USER], message(i))
    return count


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory_breakdown(pid):
    """Anonymous (heap, memtables, caches) against file-backed resident memory."""
    anon = file = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                anon = int(line.split()[1])
            elif line.startswith("Rss:"):
                file = int(line.split()[1])
    return f"anonymous {anon} kB, other {file - anon} kB"


def raw_command(sock, tag, command):
    """Seconds until the tagged reply, and the octets of the reply."""
    t0 = time.perf_counter()
    sock.sendall(b"%s %s\r\n" % (tag, command))
    data = b""
    end = b"\r\n" + tag + b" "
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
        if end in data and data.endswith(b"\r\n"):
            break
    return time.perf_counter() - t0, data


def webmail_commands(imap_port, password, label):
    """A fresh connection, as a webmail opens one per page, then what it sends."""
    w = imaplib.IMAP4("127.0.0.1", imap_port, timeout=600)
    w.login(USER, password)
    w.select("INBOX", readonly=True)
    sock = w.socket()
    for n, command in enumerate([b"UID SORT (REVERSE DATE) UTF-8 ALL", b"UID SORT (REVERSE DATE) UTF-8 ALL",
                                 b"SORT RETURN (ALL COUNT) (REVERSE ARRIVAL) UTF-8 ALL",
                                 b"UID SORT (SUBJECT DATE) UTF-8 ALL", b"UID SORT (DISPLAYFROM) UTF-8 ALL",
                                 b"UID THREAD REFERENCES UTF-8 ALL", b"UID THREAD ORDEREDSUBJECT UTF-8 ALL"]):
        took, data = raw_command(sock, b"W%d" % n, command)
        first = data.split(b"\r\n", 1)[0]
        print(f"{label} {command.decode()}: {took:.3f}s ({len(data)} octets, starts {first[:40].decode()!r})", flush=True)
    w.logout()


def timed(label, fn):
    t0 = time.perf_counter()
    result = fn()
    took = time.perf_counter() - t0
    print(f"{label}: {took:.3f}s", flush=True)
    return result


if __name__ == "__main__" and sys.argv[1] == "after-restart":
    # imap-bigbox.sh restarted the server: nothing is cached, the first SORT reads the
    # mailbox's sort keys from the store.
    imap_port, USER, password = int(sys.argv[2]), sys.argv[3], sys.argv[4]
    webmail_commands(imap_port, password, "after a server restart")
elif __name__ == "__main__":
    smtp_port, imap_port = int(sys.argv[1]), int(sys.argv[2])
    USER, password, count, pid = sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    procs = 8
    per = count // procs
    t0 = time.time()
    with multiprocessing.Pool(procs) as pool:
        n = sum(pool.map(fill, [(smtp_port, p * per, per) for p in range(procs)]))
    took = time.time() - t0
    print(f"filled {n} messages into one INBOX in {took:.1f}s ({n / took:.0f}/s)", flush=True)
    print(f"server VmRSS after the fill: {rss_kb(pid)} kB ({memory_breakdown(pid)})", flush=True)
    m = imaplib.IMAP4("127.0.0.1", imap_port, timeout=600)
    m.login(USER, password)
    m._simple_command("ENABLE", "CONDSTORE")
    typ, data = timed("SELECT INBOX", lambda: m.select("INBOX"))
    print(f"  EXISTS {data[0].decode()}", flush=True)
    print(f"server VmRSS after SELECT: {rss_kb(pid)} kB", flush=True)
    # Timed on the raw socket: imaplib's own parsing of 100,000 lines would dominate.
    sock = m.socket()
    for run in (1, 2, 3):
        t0 = time.perf_counter()
        sock.sendall(b"F%d UID FETCH 1:* (FLAGS)\r\n" % run)
        data, lines = b"", 0
        end = b"F%d OK" % run
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data = data[-256:] + chunk
            lines += chunk.count(b"\r\n")
            if end in data and data.endswith(b"\r\n"):
                break
        print(f"UID FETCH 1:* (FLAGS) run {run}: {time.perf_counter() - t0:.3f}s ({lines - 1} FETCH lines, raw socket)", flush=True)
    print(f"server VmRSS after the fetches: {rss_kb(pid)} kB", flush=True)
    typ, data = timed("UID STORE 1:* +FLAGS.SILENT (\\Seen)", lambda: m.uid("STORE", "1:*", "+FLAGS.SILENT", "(\\Seen)"))
    typ, data = timed("UID SEARCH UNSEEN", lambda: m.uid("SEARCH", None, "UNSEEN"))
    typ, data = timed("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1) with nothing new",
                      lambda: m.uid("FETCH", "1:*", "(FLAGS) (CHANGEDSINCE 999999999)"))
    print(f"server VmRSS before SORT: {rss_kb(pid)} kB", flush=True)
    # The first connection reads the keys from the store; the second finds them cached.
    webmail_commands(imap_port, password, "first connection")
    webmail_commands(imap_port, password, "second connection")
    print(f"server VmRSS at the end: {rss_kb(pid)} kB", flush=True)
    m.logout()

# Concurrency stress client for one shared IMAP mailbox (issue 14): N sessions doing
# random APPEND / FETCH / STORE (keywords, .SILENT) / EXPUNGE / UID EXPUNGE / COPY / MOVE
# with bodies repeated on purpose. Each session keeps its own model of the mailbox
# (sequence number -> UID and flags) built from the untagged responses it is sent and
# nothing else, and checks every response against it: an EXPUNGE or FETCH naming a
# sequence number it does not have, a UID that contradicts the model, EXISTS going down,
# EXPUNGE during a FETCH/STORE by sequence number, a keyword shown before FLAGS announced
# it, a body that is not the one appended. At checkpoints every session stops, catches up
# with NOOP, and all models are compared with each other and with a fresh SELECT, whose
# FETCH of every body must succeed. Every other session enables QRESYNC (RFC 7162) and
# is told of expunges as `* VANISHED uid-set` instead, which it applies by UID: a
# VANISHED to a session without QRESYNC, an EXPUNGE to one with it, or a VANISHED naming
# a UID the model does not hold is an error. Such a session learns the UIDs of new
# messages right after each command, as QRESYNC clients do.
# A FETCH answered NO [EXPUNGEISSUED] (a message another session expunged, not yet
# announced) is an error too: the server must serve the data of every message a session
# still shows (RFC 2180 §4.1.3), as Dovecot does; `allow-expungeissued` as the last
# argument counts them apart instead, for servers that keep nothing for sessions.
# Prints "errors N" and the first errors; exit 1 if any.
#
# usage: imap_stress.py HOST PORT USER PASSWORD SESSIONS OPS_PER_PHASE PHASES SEED [allow-expungeissued]
import random, re, socket, sys, threading, time

HOST, PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
SESSIONS, OPS, PHASES, SEED = (int(a) for a in sys.argv[5:9])
ALLOW_EXPUNGEISSUED = sys.argv[9:10] == ["allow-expungeissued"]
KEYWORDS = ["$label1", "$label2", "Work", "Later", "NonJunk"]
SYSTEM = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft"]
OTHER = "Archive"

errors = []
errors_lock = threading.Lock()
bodies = {}
bodies_lock = threading.Lock()
counts = {"commands": 0, "vanished": 0, "expungeissued": 0}


def error(who, text):
    with errors_lock:
        errors.append(f"{who}: {text}")


def make_body(rng):
    # Half the appends reuse one of six bodies (content-addressed storage shares them).
    if rng.random() < 0.5:
        key = f"shared-{rng.randrange(6)}"
    else:
        key = f"own-{rng.getrandbits(48):x}"
    lines = "".join(f"line {i} of {key}\r\n" for i in range(1 + hash(key) % 40))
    body = f"From: stress@example.com\r\nSubject: {key}\r\n\r\n{lines}".encode()
    with bodies_lock:
        bodies[key] = body
    return body


def body_ok(data):
    m = re.search(rb"Subject: (\S+)\r\n", data)
    if not m:
        return False
    with bodies_lock:
        return bodies.get(m.group(1).decode()) == data


class Closed(Exception):
    pass


class Session:
    def __init__(self, name, qresync=False):
        self.name = name
        self.qresync = qresync
        self.filling = False
        self.sock = socket.create_connection((HOST, PORT), timeout=60)
        self.buf = b""
        self.tagn = 0
        self.model = []  # [uid or None, frozenset of flags or None]
        self.keywords = set()
        self.command_kind = None
        self.fetched = {}  # seq -> literal data of the last FETCH
        self.read_line()  # greeting

    def err(self, text):
        error(self.name, text)

    def read_line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise Closed(self.name)
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_exact(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                raise Closed(self.name)
            self.buf += d
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_item(self):
        """One response with its literals: (text with literals cut out, [literals])."""
        text, lits = b"", []
        while True:
            line = self.read_line()
            m = re.search(rb"\{(\d+)\}$", line)
            if not m:
                return (text + line).decode("latin-1"), lits
            text += line[: m.start()] + b"\x00"
            lits.append(self.read_exact(int(m.group(1))))

    def command(self, text, literal=None, kind=None):
        self.tagn += 1
        tag = f"{self.name}.{self.tagn}"
        self.command_kind = kind
        self.fetched = {}
        counts["commands"] += 1
        if literal is None:
            self.sock.sendall(f"{tag} {text}\r\n".encode())
        else:
            self.sock.sendall(f"{tag} {text} {{{len(literal)}}}\r\n".encode())
            while True:
                item, lits = self.read_item()
                if item.startswith("+"):
                    break
                if item.startswith(tag + " "):
                    self.err(f"literal refused: {item}")
                    return item.split(" ", 2)[1], item
                self.untagged(item, lits)
            self.sock.sendall(literal + b"\r\n")
        while True:
            item, lits = self.read_item()
            if item.startswith(tag + " "):
                status = item.split(" ", 2)[1]
                self.command_kind = None
                if self.qresync and not self.filling and any(e[0] is None for e in self.model):
                    # A VANISHED names UIDs: know them before the next one can come.
                    self.filling = True
                    try:
                        self.fill()
                    finally:
                        self.filling = False
                return status, item
            self.untagged(item, lits)

    def vanished(self, item):
        if not self.qresync:
            self.err(f"VANISHED without QRESYNC: {item[:200]!r}")
            return
        if self.command_kind == "seq":
            self.err(f"VANISHED during a command by sequence number: {item[:200]!r}")
        if "(EARLIER)" in item:
            self.err(f"unasked VANISHED (EARLIER): {item[:200]!r}")
            return
        gone = set()
        for part in item.split(" ", 2)[2].split(","):
            lo, _, hi = part.partition(":")
            lo, hi = int(lo), int(hi or lo)
            gone.update(range(min(lo, hi), max(lo, hi) + 1))
        counts["vanished"] += len(gone)
        known = {e[0] for e in self.model}
        for uid in sorted(gone - known):
            self.err(f"VANISHED {uid}, a UID the session was never given")
        self.model = [e for e in self.model if e[0] not in gone]

    def untagged(self, item, lits):
        if item.startswith("* VANISHED "):
            self.vanished(item)
            return
        m = re.match(r"\* (\d+) (EXISTS|EXPUNGE|RECENT|FETCH)(.*)", item, re.S)
        if m:
            n, what, rest = int(m.group(1)), m.group(2), m.group(3)
            if what == "EXISTS":
                if n < len(self.model):
                    self.err(f"EXISTS went down from {len(self.model)} to {n} without EXPUNGE")
                    del self.model[n:]
                while len(self.model) < n:
                    self.model.append([None, None])
            elif what == "EXPUNGE":
                if self.qresync:
                    self.err(f"EXPUNGE {n} to a session with QRESYNC")
                if self.command_kind == "seq":
                    self.err(f"EXPUNGE {n} during a command by sequence number")
                if n < 1 or n > len(self.model):
                    self.err(f"EXPUNGE {n} with {len(self.model)} messages")
                else:
                    del self.model[n - 1]
            elif what == "FETCH":
                self.fetch_response(n, rest, lits)
            return
        if item.startswith("* FLAGS"):
            inner = re.search(r"\(([^)]*)\)", item)
            self.keywords = {f for f in inner.group(1).split() if not f.startswith("\\")}
            return
        if re.match(r"\* (OK|SEARCH|ESEARCH|CAPABILITY|ENABLED|ID|LIST|STATUS)\b", item):
            return
        if item.startswith("* BYE") and self.command_kind == "logout":
            return
        self.err(f"unexpected response {item[:200]!r}")

    def fetch_response(self, n, rest, lits):
        if n < 1 or n > len(self.model):
            self.err(f"FETCH for seq {n} with {len(self.model)} messages")
            return
        entry = self.model[n - 1]
        uid = re.search(r"\bUID (\d+)", rest)
        if uid:
            uid = int(uid.group(1))
            if entry[0] is not None and entry[0] != uid:
                self.err(f"seq {n} has UID {uid}, expected {entry[0]}")
            entry[0] = uid
        flags = re.search(r"\bFLAGS \(([^)]*)\)", rest)
        if flags:
            fl = frozenset(f for f in flags.group(1).split() if f != "\\Recent")
            late = {f for f in fl if not f.startswith("\\")} - self.keywords
            if late:
                self.err(f"keywords {sorted(late)} shown before FLAGS announced them")
            entry[1] = fl
        if lits:
            self.fetched[n] = lits[-1]

    def fill(self):
        """FETCH UID and FLAGS of messages the model knows only from EXISTS."""
        # Other sessions keep appending and expunging, so this may take a few rounds:
        # each NO [EXPUNGEISSUED] is followed by a NOOP that announces the expunge.
        last = ""
        for _ in range(200):
            missing = [i for i, e in enumerate(self.model) if e[0] is None or e[1] is None]
            if not missing:
                return
            status, text = self.command(f"FETCH {missing[0] + 1}:* (UID FLAGS)", kind="seq")
            last = text
            if status == "NO" and "EXPUNGEISSUED" in text:
                self.expunge_issued(text)
                self.command("NOOP")
            elif status != "OK":
                self.err(f"fill FETCH: {text}")
        self.err(f"messages still unknown after 200 FETCHes, the last: {last}")

    def expunge_issued(self, text):
        with errors_lock:
            counts["expungeissued"] += 1
        if not ALLOW_EXPUNGEISSUED:
            self.err(f"data of a message it still shows refused: {text[:200]!r}")

    def checked(self, status, text, allowed=("OK",)):
        if status == "NO" and "EXPUNGEISSUED" in text:
            self.expunge_issued(text)
        elif status not in allowed:
            self.err(f"unexpected reply {text[:200]!r}")

    def seqset(self, rng):
        n = len(self.model)
        if n == 0:
            return None
        a = rng.randrange(1, n + 1)
        if rng.random() < 0.5:
            return str(a)
        b = min(n, a + rng.randrange(0, 4))
        return f"{a}:{b}"

    def known_uids(self, rng, k):
        uids = [e[0] for e in self.model if e[0] is not None]
        return rng.sample(uids, min(k, len(uids)))

    def random_op(self, rng):
        r = rng.random()
        if r < 0.22 or len(self.model) < 5:
            flags = rng.sample(SYSTEM + KEYWORDS, rng.randrange(0, 3))
            status, text = self.command(f"APPEND INBOX ({' '.join(flags)})", literal=make_body(rng))
            self.checked(status, text)
        elif r < 0.40:
            s = self.seqset(rng)
            if s is None:
                return
            status, text = self.command(f"FETCH {s} (UID FLAGS BODY.PEEK[])", kind="seq")
            self.checked(status, text)
            for seq, data in self.fetched.items():
                if not body_ok(data):
                    self.err(f"body of seq {seq} is not what was appended: {data[:80]!r}")
        elif r < 0.62:
            s = self.seqset(rng)
            if s is None:
                return
            op = rng.choice(["+FLAGS", "-FLAGS", "+FLAGS", "FLAGS"])
            silent = rng.random() < 0.4
            flags = rng.sample(SYSTEM + KEYWORDS, rng.randrange(1, 3))
            if op != "-FLAGS" and rng.random() < 0.3:
                flags.append("\\Deleted")
            # The client knows what it asked for: with .SILENT it applies the change
            # itself; the server reports only what it could not expect.
            self.apply_store(s, op, flags)
            status, text = self.command(
                f"STORE {s} {op}{'.SILENT' if silent else ''} ({' '.join(flags)})", kind="seq"
            )
            self.checked(status, text)
        elif r < 0.72:
            status, text = self.command("EXPUNGE")
            self.checked(status, text)
        elif r < 0.78:
            uids = self.known_uids(rng, 3)
            if uids:
                status, text = self.command(f"UID EXPUNGE {','.join(map(str, uids))}")
                self.checked(status, text)
        elif r < 0.86:
            s = self.seqset(rng)
            if s is None:
                return
            status, text = self.command(f"COPY {s} INBOX", kind="seq")
            self.checked(status, text)
        elif r < 0.92:
            s = self.seqset(rng)
            if s is None:
                return
            target = rng.choice(["INBOX", OTHER])
            status, text = self.command(f"MOVE {s} {target}")
            self.checked(status, text)
        elif r < 0.96:
            uids = self.known_uids(rng, 2)
            if uids:
                status, text = self.command(f"UID MOVE {','.join(map(str, uids))} INBOX")
                self.checked(status, text)
        else:
            status, text = self.command("NOOP")
            self.checked(status, text)
        self.fill()

    def apply_store(self, s, op, flags):
        a, _, b = s.partition(":")
        lo, hi = int(a), int(b or a)
        for i in range(lo - 1, hi):
            e = self.model[i]
            if e[1] is None:
                continue
            f = set(e[1])
            if op == "+FLAGS":
                f |= set(flags)
            elif op == "-FLAGS":
                f -= set(flags)
            else:
                f = set(flags)
            e[1] = frozenset(f)

    def login_select(self):
        status, text = self.command(f'LOGIN "{USER}" "{PASSWORD}"')
        if status != "OK":
            raise SystemExit(f"login failed: {text}")
        if self.qresync:
            status, text = self.command("ENABLE QRESYNC")
            if status != "OK":
                raise SystemExit(f"ENABLE QRESYNC failed: {text}")
        status, text = self.command("SELECT INBOX")
        if status != "OK":
            raise SystemExit(f"select failed: {text}")
        self.fill()


def fresh_view(name):
    s = Session(name)
    s.login_select()
    bad = 0
    for lo in range(1, len(s.model) + 1, 50):
        status, text = s.command(f"FETCH {lo}:{min(lo + 49, len(s.model))} (BODY.PEEK[])", kind="seq")
        if status != "OK":
            s.err(f"fresh FETCH of bodies: {text}")
        for seq, data in s.fetched.items():
            if not body_ok(data):
                bad += 1
                s.err(f"body of seq {seq} damaged or missing: {data[:80]!r}")
    s.command("LOGOUT", kind="logout")
    return [(e[0], e[1]) for e in s.model], bad


def main():
    setup = Session("setup")
    setup.command(f'LOGIN "{USER}" "{PASSWORD}"')
    setup.command(f"CREATE {OTHER}")
    setup.command("LOGOUT", kind="logout")
    barrier = threading.Barrier(SESSIONS)
    sessions = [None] * SESSIONS
    started = time.time()
    checkpoints = []

    def run(i):
        rng = random.Random(SEED * 1000 + i)
        s = Session(f"s{i}", qresync=i % 2 == 1)
        sessions[i] = s
        s.login_select()
        for phase in range(PHASES):
            for _ in range(OPS):
                s.random_op(rng)
            barrier.wait()
            # Everyone has stopped writing: one NOOP brings each view up to date.
            s.command("NOOP")
            s.fill()
            if barrier.wait() == 0:
                check(phase)
            barrier.wait()
        s.command("LOGOUT", kind="logout")

    def check(phase):
        truth, _ = fresh_view(f"check{phase}")
        uids = [u for u, _ in truth]
        if uids != sorted(set(uids)):
            error("fresh SELECT", "UIDs not strictly ascending")
        for s in sessions:
            mine = [(e[0], e[1]) for e in s.model]
            if mine == truth:
                continue
            if len(mine) != len(truth):
                error(s.name, f"phase {phase}: believes {len(mine)} messages, mailbox has {len(truth)}")
            for seq, (a, b) in enumerate(zip(mine, truth), 1):
                if a != b:
                    error(s.name, f"phase {phase}: seq {seq} is {a}, mailbox says {b}")
                    break
        checkpoints.append(len(truth))

    def guarded(i):
        try:
            run(i)
        except Exception as e:  # a crash of one session is an error, not a hang
            error(f"s{i}", f"session died: {e!r}")
            barrier.abort()

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - started
    print(f"sessions {SESSIONS} commands {counts['commands']} seconds {elapsed:.1f} "
          f"commands/s {counts['commands'] / elapsed:.0f} messages at checkpoints {checkpoints}")
    print(f"vanished {counts['vanished']}")
    print(f"expungeissued {counts['expungeissued']}")
    print(f"errors {len(errors)}")
    for e in errors[:30]:
        print(e)
    sys.exit(1 if errors or len(checkpoints) != PHASES else 0)


main()

"""Times failed logins on an LDAP-bind domain per case (see ldap-login-timing.sh):
WEB IMAPS METRICS CA N SLAPD_LOG."""
import http.client
import imaplib
import random
import re
import ssl
import statistics
import sys
import time
import urllib.parse
import urllib.request

WEB, IMAPS, METRICS, CA, N, SLAPD_LOG = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                         sys.argv[4], int(sys.argv[5]), sys.argv[6])
CTX = ssl.create_default_context(cafile=CA)
W, P = "Wrong1horse", "Bench1password"
CASES = [
    ("unknown address", "nobody@bench.example", W),
    ("wrong password", "known@bench.example", W),
    ("deactivated", "gone@bench.example", P),
    ("not in the directory", "local@bench.example", W),
]


def hashes():
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % METRICS, timeout=10).read().decode()
    return int(re.search(r"^understudy_password_hashes_total (\d+)$", text, re.M).group(1))


def binds():
    with open(SLAPD_LOG, errors="replace") as f:
        return sum(1 for line in f if " BIND dn=" in line and " method=" in line)


class Web:
    """One kept-alive connection: GET the form, then time the POST."""

    def __init__(self):
        self.c = http.client.HTTPSConnection("localhost", WEB, context=CTX, timeout=60)

    def once(self, user, password):
        self.c.request("GET", "/me/login")
        r = self.c.getresponse()
        form = r.read().decode()
        cookie = r.getheader("Set-Cookie").split(";")[0]
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', form).group(1)
        data = urllib.parse.urlencode({"address": user, "password": password, "csrf": token})
        headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        start = time.perf_counter()
        self.c.request("POST", "/me/login", body=data, headers=headers)
        r = self.c.getresponse()
        r.read()
        elapsed = time.perf_counter() - start
        if r.status != 401:
            raise SystemExit("/me/login %s: expected 401, got %d" % (user, r.status))
        return elapsed * 1000


class Imap:
    """A fresh connection per login (the server ends a session after a few failures);
    the LOGIN alone timed, NO expected."""

    def once(self, user, password):
        m = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=CTX, timeout=60)
        start = time.perf_counter()
        try:
            m.login(user, password)
            raise SystemExit("IMAP %s: logged in" % user)
        except imaplib.IMAP4.error:
            elapsed = time.perf_counter() - start
        try:
            m.logout()
        except Exception:
            pass
        return elapsed * 1000


def p90(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


for proto, client in [("IMAP LOGIN", Imap()), ("/me/login", Web())]:
    work = {}
    for name, user, password in CASES:  # warm-up, not counted; the work of each case
        b, h = binds(), hashes()
        client.once(user, password)
        work[name] = (binds() - b, hashes() - h)
    times = {name: [] for name, _, _ in CASES}
    for _ in range(N):
        order = list(CASES)
        random.shuffle(order)
        for name, user, password in order:
            times[name].append(client.once(user, password))
    ref = CASES[0][0]
    ref_median, ref_p90 = statistics.median(times[ref]), p90(times[ref])
    print("%s, %d logins per case (ms):" % (proto, N))
    for name, _, _ in CASES:
        median, high = statistics.median(times[name]), p90(times[name])
        print("  %-22s median %7.2f  p90 %7.2f  vs %s: median %+6.2f  p90 %+6.2f  | binds %d, argon2 %d"
              % (name, median, high, ref, median - ref_median, high - ref_p90, *work[name]))

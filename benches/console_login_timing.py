"""Times failed console logins per case (see console-login-timing.sh): PORT CA N."""
import http.client
import random
import re
import ssl
import statistics
import sys
import time
import urllib.parse

PORT, CA, N = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
CTX = ssl.create_default_context(cafile=CA)
W, P = "Wrong1horse", "Bench1password"
PAGES = {
    "/login": [
        ("unknown name", {"name": "nobody", "password": W, "code": ""}),
        ("wrong password", {"name": "root", "password": W, "code": ""}),
        ("TOTP admin, wrong password", {"name": "tot", "password": W, "code": ""}),
        ("TOTP admin, no code", {"name": "tot", "password": P, "code": ""}),
    ],
    "/me/login": [
        ("unknown address", {"address": "nobody@bench.example", "password": W}),
        ("wrong password", {"address": "known@bench.example", "password": W}),
        ("deactivated", {"address": "gone@bench.example", "password": P}),
        ("no password set", {"address": "nopass@bench.example", "password": W}),
    ],
}


class Login:
    """One kept-alive connection: GET the form, then time the POST."""

    def __init__(self):
        self.c = http.client.HTTPSConnection("localhost", PORT, context=CTX, timeout=60)

    def once(self, path, fields):
        self.c.request("GET", path)
        r = self.c.getresponse()
        form = r.read().decode()
        cookie = r.getheader("Set-Cookie").split(";")[0]
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', form).group(1)
        data = urllib.parse.urlencode(dict(fields, csrf=token))
        headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        start = time.perf_counter()
        self.c.request("POST", path, body=data, headers=headers)
        r = self.c.getresponse()
        r.read()
        elapsed = time.perf_counter() - start
        if r.status != 401:
            raise SystemExit("%s %s: expected 401, got %d" % (path, fields, r.status))
        return elapsed * 1000


def p90(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


login = Login()
for path, cases in PAGES.items():
    for name, fields in cases:  # warm-up, not counted
        login.once(path, fields)
    times = {name: [] for name, _ in cases}
    for _ in range(N):
        order = list(cases)
        random.shuffle(order)
        for name, fields in order:
            times[name].append(login.once(path, fields))
    ref_name = cases[0][0]
    ref_median, ref_p90 = statistics.median(times[ref_name]), p90(times[ref_name])
    print("%s, %d logins per case (ms):" % (path, N))
    for name, _ in cases:
        median, high = statistics.median(times[name]), p90(times[name])
        print("  %-28s median %7.2f  p90 %7.2f  vs %s: median %+6.2f  p90 %+6.2f"
              % (name, median, high, ref_name, median - ref_median, high - ref_p90))

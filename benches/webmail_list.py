"""Roundcube list-request benchmark client (benches/webmail-list.sh).

    python3 webmail_list.py fill SMTP_PORT USER COUNT
    python3 webmail_list.py list ROUNDCUBE_URL USER PASSWORD METRICS_URL REQUESTS LABEL

`list` logs in to Roundcube as a browser would (the login form's token, then its
session cookie), then asks for the first page of INBOX sorted by date, newest first,
REQUESTS times (what Roundcube's list view sends on opening the folder or on refresh),
printing the wall time per request and the time Understudy spent on it
(understudy_session_busy_seconds_total for IMAP over TLS, before and after).
"""
import email.utils
import http.cookiejar
import json
import re
import smtplib
import statistics
import sys
import time
import urllib.parse
import urllib.request


def message(user, i):
    date = email.utils.formatdate(1_790_000_000 + (i * 7919) % 1_000_003 * 60)
    refs = f"References: <wm{i // 3}@example.net>\r\n" if i % 3 else ""
    reply = "Re: " if i % 3 else ""
    return (
        f"From: Sender {i % 37} <sender{i % 37}@example.net>\r\nTo: {user}\r\n"
        f"Subject: {reply}message {i - i % 3}\r\nMessage-ID: <wm{i}@example.net>\r\n{refs}"
        f"Date: {date}\r\n\r\n" + "body line\r\n" * 20
    ).encode()


def fill(port, user, count):
    t0 = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", int(port), timeout=120) as s:
        for i in range(int(count)):
            s.sendmail("sender@example.net", [user], message(user, i))
    print(f"filled INBOX with {count} messages in {time.perf_counter() - t0:.1f} s")


def busy_seconds(metrics_url):
    text = urllib.request.urlopen(metrics_url, timeout=30).read().decode()
    m = re.search(r'^understudy_session_busy_seconds_total\{service="imaps"\} ([0-9.]+)$', text, re.M)
    steps = re.search(r'^understudy_session_steps_total\{service="imaps"\} ([0-9]+)$', text, re.M)
    return float(m.group(1)), int(steps.group(1))


def run_list(base, user, password, metrics_url, requests, label):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    deadline = time.time() + 30
    while True:
        try:
            page = opener.open(base, timeout=30).read().decode()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    token = re.search(r'name="_token" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({
        "_token": token, "_task": "login", "_action": "login", "_timezone": "UTC",
        "_url": "", "_user": user, "_pass": password,
    }).encode()
    page = opener.open(base + "?_task=login", form, timeout=120).read().decode()
    token = re.search(r'"request_token":"([^"]+)"', page)
    if not token:
        sys.exit(f"{label}: login failed")
    token = token.group(1)
    url = base + "?" + urllib.parse.urlencode({
        "_task": "mail", "_action": "list", "_mbox": "INBOX", "_page": "1",
        "_sort": "date_DESC", "_remote": "1",
    })
    walls, busies, steps = [], [], []
    rows = None
    for _ in range(int(requests)):
        before, s0 = busy_seconds(metrics_url)
        req = urllib.request.Request(url, headers={"X-Roundcube-Request": token,
                                                   "X-Requested-With": "XMLHttpRequest"})
        t0 = time.perf_counter()
        body = opener.open(req, timeout=300).read().decode()
        walls.append(time.perf_counter() - t0)
        after, s1 = busy_seconds(metrics_url)
        busies.append(after - before)
        steps.append(s1 - s0)
        answer = json.loads(body)
        rows = answer.get("exec", "").count("add_message_row")
    median = statistics.median
    print(f"{label}: {requests} list requests (page 1 of INBOX by date, {rows} rows): "
          f"wall median {median(walls) * 1000:.0f} ms (min {min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f}); "
          f"in Understudy median {median(busies) * 1000:.1f} ms over {median(steps):.0f} IMAP steps "
          f"(min {min(busies) * 1000:.1f}, max {max(busies) * 1000:.1f})")


if __name__ == "__main__":
    if sys.argv[1] == "fill":
        fill(*sys.argv[2:5])
    else:
        run_list(*sys.argv[2:8])

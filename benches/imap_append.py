# Sequential APPEND latency on one connection (issue 14 defect 10): N APPENDs of a small
# message with imaplib (synchronizing literal: command line, "+", literal, CRLF), each
# timed from the command to the tagged OK. Prints median, p90 and max in ms.
# usage: imap_append.py HOST PORT USER PASSWORD N
import imaplib, statistics, sys, time

host, port, user, password, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
m = imaplib.IMAP4(host, port)
m.login(user, password)
msg = b"From: a@example.com\r\nSubject: draft\r\n\r\n" + b"x" * 2000 + b"\r\n"
times = []
for i in range(n):
    t = time.perf_counter()
    typ, _ = m.append("INBOX", None, None, msg)
    times.append((time.perf_counter() - t) * 1000)
    assert typ == "OK", typ
m.logout()
times.sort()
print(f"APPEND x{n}: median {statistics.median(times):.2f} ms, p90 {times[int(n * 0.9)]:.2f} ms, "
      f"max {times[-1]:.2f} ms, total {sum(times) / 1000:.2f} s")

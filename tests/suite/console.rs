//! The web console over HTTPS with a real HTTP client (Python's urllib with a cookie
//! jar): logins without user enumeration, CSRF on every state change, no session
//! fixation, a domain administrator kept to their domains whatever the URL or form, the
//! audit log, and user self-service changing the password that IMAP then accepts.

use crate::harness::*;

pub const WEB_CONFIG: &str = "[web]\nlisten = \"127.0.0.1:0\"\n";

/// A server with the console, domains example.com and other.org, user anna, a global
/// administrator `root` and a domain administrator `msp` (example.com only).
pub fn console_server(extra: &str) -> TestServer {
    TestServer::setup(&format!("{WEB_CONFIG}{extra}"), |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.admin_ok(&["domain", "add", "other.org"]);
        s.add_user("anna@example.com", PASSWORD);
        add_admin(s, "root", &[]);
        add_admin(s, "msp", &["--role", "domain", "--domain", "example.com"]);
    })
}

/// example.com relayed to `relay` with probes off (and `extra` arguments), and other.org.
pub fn add_relayed_domains(s: &TestServer, relay: &str, extra: &[&str]) {
    let mut args = vec![
        "domain",
        "add",
        "example.com",
        "--relay-host",
        relay,
        "--monitoring",
        "false",
    ];
    args.extend_from_slice(extra);
    s.admin_ok(&args);
    s.admin_ok(&["domain", "add", "other.org"]);
}

/// `admin add NAME ARGS --password-stdin` with `PASSWORD`; returns what it printed.
pub fn add_admin(s: &TestServer, name: &str, args: &[&str]) -> String {
    let mut all = vec!["admin", "add", name];
    all.extend_from_slice(args);
    all.push("--password-stdin");
    let out = s.admin(&all, Some(&format!("{PASSWORD}\n")));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Python helpers: `Client()` keeps cookies; `get(path)` and `post(path, fields)` return
/// (status, body, final url); `csrf(body)` is the form token in a page.
pub const CLIENT_PY: &str = r#"
import http.cookiejar, re, ssl, sys, urllib.parse, urllib.request
CA, PORT = sys.argv[1], int(sys.argv[2])
BASE = "https://localhost:%d" % PORT
CTX = ssl.create_default_context(cafile=CA)
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None
class Client:
    def __init__(self, follow=True):
        self.jar = http.cookiejar.CookieJar()
        handlers = [urllib.request.HTTPSHandler(context=CTX), urllib.request.HTTPCookieProcessor(self.jar)]
        if not follow:
            handlers.append(NoRedirect())
        self.opener = urllib.request.build_opener(*handlers)
    def _do(self, req):
        try:
            r = self.opener.open(req, timeout=30)
            return r.status, r.read().decode(), r.geturl()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers.get("Location") or e.geturl()
    def get(self, path):
        return self._do(urllib.request.Request(BASE + path))
    def post(self, path, fields):
        data = urllib.parse.urlencode(fields).encode()
        return self._do(urllib.request.Request(BASE + path, data=data))
    def cookie(self, name):
        return next((c.value for c in self.jar if c.name == name), None)
    def set_cookie(self, name, value):
        self.jar.set_cookie(http.cookiejar.Cookie(0, name, value, None, False, "localhost.local", True, False, "/", True, True, None, False, None, None, {}))
def csrf(body):
    return re.search(r'name="csrf" value="([0-9a-f]+)"', body).group(1)
def login(c, name, password, code=""):
    s, body, _ = c.get("/login")
    return c.post("/login", {"name": name, "password": password, "code": code, "csrf": csrf(body)})
"#;

/// Python: `api(method, path, token, body)` calls the JSON API; returns (status, JSON).
pub const API_PY: &str = r#"
import json
def api(method, path, token=None, body=None):
    req = urllib.request.Request(BASE + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        r = urllib.request.urlopen(req, context=CTX, timeout=30)
        return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
"#;

fn args(server: &TestServer) -> Vec<String> {
    vec![
        ca_cert().display().to_string(),
        server.addr("web").port().to_string(),
    ]
}

#[test]
fn logins_give_nothing_away_and_every_change_needs_the_session_and_its_token() {
    let server = console_server("");
    let script = format!(
        "{CLIENT_PY}{}",
        r#"
def scrub(body):
    return re.sub(r'value="[0-9a-f]{64}"', "", body)
# No user enumeration: an unknown name and a wrong password get the same page.
c = Client()
unknown = login(c, "nobody", "Wrong1horse")
wrong = login(c, "root", "Wrong1horse")
print("unknown", unknown[0], "wrong", wrong[0], "same page", scrub(unknown[1]) == scrub(wrong[1]))
u = Client()
s, body, _ = u.get("/me/login")
a = u.post("/me/login", {"address": "nobody@example.com", "password": "Wrong1horse", "csrf": csrf(body)})
s, body, _ = u.get("/me/login")
b = u.post("/me/login", {"address": "anna@example.com", "password": "Wrong1horse", "csrf": csrf(body)})
print("user pages", a[0], b[0], "same page", scrub(a[1]) == scrub(b[1]))
# A login form posted without its double-submit token (login CSRF) is refused.
print("login without token", Client().post("/login", {"name": "root", "password": "Correct1horse", "csrf": "00"})[0])
# Session fixation: a planted session id is never the logged-in one, and never works.
c = Client()
c.set_cookie("__Host-us_session", "a" * 64)
s, body, url = login(c, "root", "Correct1horse")
sid = c.cookie("__Host-us_session")
print("logged in", s, "dashboard" in body.lower(), "new id", sid != "a" * 64)
p = Client(follow=False)
p.set_cookie("__Host-us_session", "a" * 64)
print("planted id", p.get("/")[0])
# The same on the users' login page.
u = Client()
u.set_cookie("__Host-us_session", "b" * 64)
s, body, _ = u.get("/me/login")
s, body, _ = u.post("/me/login", {"address": "anna@example.com", "password": "Correct1horse", "csrf": csrf(body)})
usid = u.cookie("__Host-us_session")
print("user logged in", s, "client-settings" in body, "new id", usid not in (None, "b" * 64))
p = Client(follow=False)
p.set_cookie("__Host-us_session", "b" * 64)
print("planted user id", p.get("/me")[0])
# CSRF: a state change without the session's token changes nothing.
s, body, _ = c.get("/domains/example.com")
token = csrf(body)
print("no token", c.post("/domains/example.com/outage", {"action": "start", "reason": "x"})[0])
print("wrong token", c.post("/domains/example.com/outage", {"action": "start", "reason": "x", "csrf": "0" * 64})[0])
s, body, _ = c.get("/")
print("still normal", re.search(r'data-domain="example.com".*?phase-(\w+)', body, re.S).group(1))
s, body, _ = c.post("/domains/example.com/outage", {"action": "start", "reason": "console test", "csrf": token})
print("with token", s, "outage" in body)
# Another client with its own session cannot use this session's token.
m = Client()
s, body, _ = login(m, "msp", "Correct1horse")
mtoken = csrf(body)
print("msp sees", sorted(set(re.findall(r'data-domain="([^"]+)"', body))))
print("msp url", m.get("/domains/other.org")[0], m.get("/queue?domain=other.org")[0], m.get("/users/anna@other.org")[0])
print("msp form", m.post("/domains/other.org/outage", {"action": "start", "reason": "x", "csrf": mtoken})[0])
print("msp replay of root's token", m.post("/domains/example.com/outage", {"action": "stop", "reason": "x", "csrf": token})[0])
s, body, _ = c.get("/audit")
print("audit", "outage start" in body, "login" in body)
s, body, _ = m.get("/audit")
print("msp audit hides root's logins", "nobody" not in body)
"#
    );
    let out = python_ok(&script, &args(&server));
    for expected in [
        "unknown 401 wrong 401 same page True",
        "user pages 401 401 same page True",
        "login without token 403",
        "logged in 200 True new id True",
        "planted id 303",
        "user logged in 200 True new id True",
        "planted user id 303",
        "no token 403",
        "wrong token 403",
        "still normal normal",
        "with token 200 True",
        "msp sees ['example.com']",
        "msp url 404 404 404",
        "msp form 404",
        "msp replay of root's token 403",
        "audit True True",
        "msp audit hides root's logins True",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
    let status = server.admin_ok(&["outage", "status"]);
    let line = |d: &str| {
        status
            .lines()
            .find(|l| l.starts_with(d))
            .unwrap_or("")
            .to_string()
    };
    assert!(line("example.com").contains("outage"), "{status}");
    assert!(
        line("other.org").contains("normal"),
        "the domain admin changed nothing: {status}"
    );
}

/// Python: `raw_login(path, fields)` fetches the login form on a fresh connection, posts
/// `fields` with its double-submit token and cookie, and returns the whole answer as text
/// (status line, every header in order, body); `scrub` blanks what differs per request
/// (the `Date` header and the 64-hex-digit token in the cookie and the form).
pub const RAW_LOGIN_PY: &str = r#"
import http.client, re, ssl, sys, urllib.parse
CA, PORT = sys.argv[1], int(sys.argv[2])
CTX = ssl.create_default_context(cafile=CA)
def raw_login(path, fields):
    c = http.client.HTTPSConnection("localhost", PORT, context=CTX, timeout=60)
    c.request("GET", path)
    r = c.getresponse()
    form = r.read().decode()
    cookie = r.getheader("Set-Cookie").split(";")[0]
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', form).group(1)
    data = urllib.parse.urlencode(dict(fields, csrf=token))
    c.request("POST", path, body=data, headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    text = "HTTP/%d.%d %d %s\n" % (r.version // 10, r.version % 10, r.status, r.reason)
    text += "".join("%s: %s\n" % (k, v) for k, v in r.getheaders())
    text += "\n" + r.read().decode()
    c.close()
    return text
def scrub(text):
    text = re.sub(r"(?im)^date: [^\n]*$", "date: *", text)
    return re.sub(r"[0-9a-f]{64}", "*", text)
def compare(page, cases):
    answers = [(name, scrub(raw_login(path, fields))) for name, path, fields in cases]
    reference = answers[0][1]
    print(page, "reference", reference.splitlines()[0], "|", ", ".join(l.split(":")[0] for l in reference.split("\n\n")[0].splitlines()[1:]))
    for name, answer in answers[1:]:
        same = answer == reference
        print(page, name, "identical", same)
        if not same:
            for a, b in zip(reference.splitlines(), answer.splitlines()):
                if a != b:
                    print("  reference:", a, "\n  this one: ", b)
                    break
"#;

#[test]
fn every_failed_login_gets_the_same_bytes_on_both_login_pages() {
    // The default lock-outs: admins after 5 failures of a name, users after 10; the
    // users' failure delay (500 ms per recent failure by default) made short.
    let mut server = console_server("[auth]\nfailure_delay_ms = 50\n");
    add_admin(&server, "tot", &["--totp"]);
    server.add_user("gone@example.com", PASSWORD);
    server.admin_ok(&["user", "deactivate", "gone@example.com"]);
    server.admin_ok(&["user", "add", "nopass@example.com"]);
    let script = format!(
        "{RAW_LOGIN_PY}{}",
        r#"
W, P = "Wrong1horse", "Correct1horse"
def admin(name, password, code=""):
    return ("/login", {"name": name, "password": password, "code": code})
def user(address, password):
    return ("/me/login", {"address": address, "password": password})
compare("admin", [
    ("unknown name", *admin("nobody", W)),
    ("wrong password", *admin("root", W)),
    ("TOTP admin, wrong password", *admin("tot", W)),
    ("TOTP admin, right password, no code", *admin("tot", P)),
    ("TOTP admin, right password, wrong code", *admin("tot", P, "000000")),
    ("unknown name, empty password", *admin("nobody", "")),
])
# Lock both names out (5 failures each), then: the same answer, even to the right password.
for _ in range(3):
    raw_login(*admin("nobody", W))
for _ in range(4):
    raw_login(*admin("root", W))
compare("admin", [
    ("unknown name", *admin("someone", W)),
    ("locked unknown name", *admin("nobody", W)),
    ("locked name, right password", *admin("root", P)),
])
compare("user", [
    ("unknown address", *user("nobody@example.com", W)),
    ("unknown domain", *user("nobody@nowhere.test", W)),
    ("wrong password", *user("anna@example.com", W)),
    ("deactivated, right password", *user("gone@example.com", P)),
    ("no password set", *user("nopass@example.com", W)),
    ("no password set, empty password", *user("nopass@example.com", "")),
])
for _ in range(9):
    raw_login(*user("nobody@example.com", W))
    raw_login(*user("anna@example.com", W))
compare("user", [
    ("unknown address", *user("nobody@nowhere.test", W)),
    ("locked unknown address", *user("nobody@example.com", W)),
    ("locked address, right password", *user("anna@example.com", P)),
])
"#
    );
    let out = python_ok(&script, &args(&server));
    assert!(
        out.contains("admin reference HTTP/1.1 401 Unauthorized |")
            && out.contains("user reference HTTP/1.1 401 Unauthorized |"),
        "{out}"
    );
    let identical = out.lines().filter(|l| l.ends_with("identical True")).count();
    assert_eq!(identical, 14, "every case the same as the unknown name:\n{out}");
    assert!(!out.contains("identical False"), "{out}");
    // The lock-outs really happened (the throttle answered, not the password check).
    let log = server.log();
    assert!(
        log.contains("login refused: too many failures"),
        "the users' throttle never locked:\n{out}"
    );
    println!("{out}");
}

/// Issue 16: the administrators' page checked passwords with argon2 on tokio's blocking
/// pool, unbounded, beside every other request; now on the authenticator's hash pool,
/// counted by `understudy_password_hashes_total`: one run per failed login, whether the
/// name exists or not.
#[test]
fn admin_logins_check_passwords_on_the_bounded_hash_pool() {
    let server = console_server("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let script = format!(
        "{RAW_LOGIN_PY}{}",
        r#"
import urllib.request
METRICS = int(sys.argv[3])
def hashes():
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % METRICS, timeout=10).read().decode()
    return int(re.search(r"^understudy_password_hashes_total (\d+)$", text, re.M).group(1))
for case, name, password in [("unknown name", "nobody", "Wrong1horse"), ("wrong password", "root", "Wrong1horse"), ("right password", "root", "Correct1horse")]:
    before = hashes()
    answer = raw_login("/login", {"name": name, "password": password, "code": ""}).split("\n")[0]
    print("%s|%s|argon2 %d" % (case, answer, hashes() - before))
"#
    );
    let mut args = args(&server);
    args.push(server.addr("metrics").port().to_string());
    let out = python_ok(&script, &args);
    for expected in [
        "unknown name|HTTP/1.1 401 Unauthorized|argon2 1",
        "wrong password|HTTP/1.1 401 Unauthorized|argon2 1",
        "right password|HTTP/1.1 303 See Other|argon2 1",
    ] {
        assert!(out.contains(expected), "{expected}:\n{out}");
    }
}

/// A full hash lane (one hash thread, a queue of one) is a temporary failure at once on
/// both login pages, as IMAP's NO [UNAVAILABLE]: 30 logins posted at the same moment on
/// connections opened beforehand get 401 (checked) or 503 "busy" (refused unchecked),
/// never anything else, and some of each.
#[test]
fn a_full_hash_lane_answers_busy_on_both_login_pages() {
    let config = "[web]\nlisten = \"127.0.0.1:0\"\nmax_failures = 100000\n\
                  [auth]\nhash_threads = 1\nhash_queue = 1\nfailure_delay_ms = 0\nmax_failures = 100000\n";
    let server = TestServer::setup(config, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        add_admin(s, "root", &[]);
    });
    let script = format!(
        "{RAW_LOGIN_PY}{}",
        r#"
import threading
def flood(path, fields_for, n=30):
    conns = []
    for i in range(n):
        c = http.client.HTTPSConnection("localhost", PORT, context=CTX, timeout=60)
        c.request("GET", path)
        r = c.getresponse()
        form = r.read().decode()
        cookie = r.getheader("Set-Cookie").split(";")[0]
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', form).group(1)
        conns.append((c, cookie, urllib.parse.urlencode(dict(fields_for(i), csrf=token))))
    barrier = threading.Barrier(n)
    answers = []
    def post(c, cookie, data):
        barrier.wait()
        c.request("POST", path, body=data, headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        body = r.read().decode()
        answers.append((r.status, "busy checking passwords" in body))
        c.close()
    threads = [threading.Thread(target=post, args=conn) for conn in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers
W = "Wrong1horse"
for page, path, fields in [
    ("admin", "/login", lambda i: {"name": "nobody%d" % i, "password": W, "code": ""}),
    ("user", "/me/login", lambda i: {"address": "nobody%d@example.com" % i, "password": W}),
]:
    for attempt in range(5):
        answers = flood(path, fields)
        busy = sum(1 for status, says in answers if status == 503 and says)
        failed = sum(1 for status, _ in answers if status == 401)
        if busy and failed:
            break
    print(page, "answers", len(answers), "busy", busy > 0, "failed", failed > 0, "other", len(answers) - busy - failed)
"#
    );
    let out = python_ok(&script, &args(&server));
    println!("{out}");
    for page in ["admin", "user"] {
        let expected = format!("{page} answers 30 busy True failed True other 0");
        assert!(out.contains(&expected), "{expected}:\n{out}");
    }
}

#[test]
fn a_user_changes_their_password_and_imap_takes_the_new_one() {
    let server = console_server("");
    let script = format!(
        "{CLIENT_PY}{}",
        r#"
import imaplib
IMAPS = int(sys.argv[3])
u = Client()
s, body, _ = u.get("/me/login")
s, body, _ = u.post("/me/login", {"address": "anna@example.com", "password": "Correct1horse", "csrf": csrf(body)})
print("logged in", s, "anna@example.com" in body, "client-settings" in body)
s, body, _ = u.post("/me/password", {"current": "Correct1horse", "new": "short", "repeat": "short", "csrf": csrf(body)})
print("policy", "Not changed" in body)
s, body, _ = u.post("/me/password", {"current": "Correct1horse", "new": "Brand2newHorse", "repeat": "Brand2newHorse", "csrf": csrf(body)})
print("changed", "Password changed" in body)
m = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=CTX, timeout=30)
print("imap new", m.login("anna@example.com", "Brand2newHorse")[0])
m.logout()
m = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=CTX, timeout=30)
try:
    m.login("anna@example.com", "Correct1horse")
    print("imap old accepted")
except imaplib.IMAP4.error:
    print("imap old refused")
"#
    );
    let mut a = args(&server);
    a.push(server.addr("imaps").port().to_string());
    let out = python_ok(&script, &a);
    for expected in [
        "logged in 200 True True",
        "policy True",
        "changed True",
        "imap new OK",
        "imap old refused",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
}

/// The session cookies a first script printed, checked by a second one after the CLI
/// changed the accounts in between.
fn cookie_after(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
        .trim()
        .to_string()
}

#[test]
fn removing_an_administrator_or_deactivating_a_user_ends_their_sessions_at_once() {
    let server = console_server("");
    let token = {
        let out = server.admin_ok(&["admin", "token", "add", "msp", "--label", "t"]);
        out.split_whitespace()
            .find(|w| w.starts_with("us_"))
            .unwrap_or_else(|| panic!("no token in {out}"))
            .to_string()
    };
    let before = format!(
        "{CLIENT_PY}{}",
        r#"
m = Client(follow=False)
s, body, _ = m.get("/login")
s, body, _ = m.post("/login", {"name": "msp", "password": "Correct1horse", "code": "", "csrf": csrf(body)})
print("msp login", s)
print("msp dashboard", m.get("/")[0])
r = Client()
s, body, _ = login(r, "root", "Correct1horse")
print("root dashboard", r.get("/")[0])
u = Client(follow=False)
s, body, _ = u.get("/me/login")
s, body, _ = u.post("/me/login", {"address": "anna@example.com", "password": "Correct1horse", "csrf": csrf(body)})
print("anna me", u.get("/me")[0])
print("msp_cookie", m.cookie("__Host-us_session"))
print("root_cookie", r.cookie("__Host-us_session"))
print("anna_cookie", u.cookie("__Host-us_session"))
"#
    );
    let out = python_ok(&before, &args(&server));
    for expected in ["msp dashboard 200", "root dashboard 200", "anna me 200"] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
    // msp is removed and at once made again under the same name (a new account), and
    // anna is deactivated, all through the CLI and the admin socket.
    server.admin_ok(&["admin", "remove", "msp"]);
    add_admin(&server, "msp", &["--role", "domain", "--domain", "example.com"]);
    server.admin_ok(&["user", "deactivate", "anna@example.com"]);
    let after = format!(
        "{CLIENT_PY}{}",
        r#"
import json
msp, root, anna, token = sys.argv[3:7]
def client(cookie):
    c = Client(follow=False)
    c.set_cookie("__Host-us_session", cookie)
    return c
m = client(msp)
s, body, where = m.get("/")
print("msp after", s, where)
print("msp queue after", m.get("/queue")[0])
print("root after", client(root).get("/")[0])
u = client(anna)
s, body, where = u.get("/me")
print("anna after", s, where)
req = urllib.request.Request(BASE + "/api/v1/domains")
req.add_header("Authorization", "Bearer " + token)
try:
    print("token after", urllib.request.urlopen(req, context=CTX, timeout=30).status)
except urllib.error.HTTPError as e:
    print("token after", e.code)
"#
    );
    let mut a = args(&server);
    for name in ["msp_cookie", "root_cookie", "anna_cookie"] {
        a.push(cookie_after(&out, name));
    }
    a.push(token);
    let out = python_ok(&after, &a);
    for expected in [
        "msp after 303 /login",
        "msp queue after 303",
        "root after 200",
        "anna after 303 /me/login",
        "token after 401",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
}

/// The failover drill logs in over IMAP as the user and finds its message in the INBOX;
/// where it must fail, it does and says why: a domain without alert recipients fails
/// the last step (nobody would hear of a real outage), a wrong password fails the IMAP
/// login, and each time the outage it started is over. A drill without the password,
/// on a domain already in an outage, or by a domain administrator on another domain is
/// refused. The password is neither logged nor shown.
#[test]
fn the_failover_drill_reads_its_message_as_the_user_and_fails_where_it_must() {
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = crate::sink::DumpSink::start(sink_dir.path());
    let relay = sink.addr();
    let mut server = TestServer::setup(WEB_CONFIG, |s| {
        add_relayed_domains(s, &relay, &[]);
        s.add_user("anna@example.com", PASSWORD);
        s.add_user("olga@other.org", PASSWORD);
        s.admin_ok(&["outage", "start", "other.org"]);
        add_admin(s, "root", &[]);
        add_admin(s, "msp", &["--role", "domain", "--domain", "example.com"]);
    });
    let script = format!(
        "{CLIENT_PY}{}",
        r#"
import time
c = Client()
s, body, _ = login(c, "root", "Correct1horse")
s, body, _ = c.get("/domains/other.org")
s, body, _ = c.post("/domains/other.org/drill", {"address": "olga@other.org", "password": "Correct1horse", "csrf": csrf(body)})
print("in an outage", s, "only in normal operation" in body)
s, body, _ = c.get("/domains/example.com")
print("drill form asks for the password", 'name="password" type="password"' in body)
s, body, _ = c.post("/domains/example.com/drill", {"address": "olga@other.org", "password": "Correct1horse", "csrf": csrf(body)})
print("other domain's user", s)
s, body, _ = c.get("/domains/example.com")
s, body, _ = c.post("/domains/example.com/drill", {"address": "anna@example.com", "csrf": csrf(body)})
print("no password", s, "the drill logs in over IMAP" in body)
def drill(password, label):
    s, body, _ = c.get("/domains/example.com")
    s, body, url = c.post("/domains/example.com/drill", {"address": "anna@example.com", "password": password, "csrf": csrf(body)})
    print(label, "started", s, "/drill/" in url)
    deadline = time.monotonic() + 300
    while 'id="drill-summary"' not in body and time.monotonic() < deadline:
        time.sleep(0.25)
        s, body, _ = c.get(urllib.parse.urlparse(url).path)
    print(label, "summary", re.search(r'id="drill-summary">([^<]*)<', body).group(1))
    for name, result, detail in re.findall(r'<tr class="step-\w+"><td>([^<]*)</td><td class="result">(\w+)</td><td class="detail">([^<]*)</td>', body):
        print(label, "step", result, name, "|", detail)
    print(label, "password shown", password in body)
drill("Correct1horse", "first")
# The first drill's message goes to the primary; a second drill waits for normal operation.
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    s, body, _ = c.get("/")
    if re.search(r'data-domain="example.com".*?phase-(\w+)', body, re.S).group(1) == "normal":
        break
    time.sleep(0.25)
drill("Drill9wrongHorse", "second")
s, body, _ = c.get("/audit")
print("audit", "failover drill" in body, body.count("outage start") >= 1, body.count("outage stop") >= 1)
m = Client()
s, body, _ = login(m, "msp", "Correct1horse")
s, body, _ = m.get("/domains/example.com")
print("msp drills other.org", m.post("/domains/other.org/drill", {"address": "olga@other.org", "csrf": csrf(body)})[0])
"#
    );
    let out = python_ok(&script, &args(&server));
    for expected in [
        "in an outage 422 True",
        "drill form asks for the password True",
        "other domain's user 422",
        "no password 422 True",
        "first started 200 True",
        "first summary Drill failed",
        "first step passed Start a manual outage",
        "first step passed Send a message from outside to anna@example.com | &lt;drill.",
        "first step passed The message is spooled here",
        "first step passed Log in over IMAP as anna@example.com | logged in as anna@example.com (imaps 127.0.0.1:",
        "TLS with the server's own certificate): OK",
        "first step passed The test message is in anna@example.com",
        "INBOX | INBOX UID ",
        "first step passed Stop the outage",
        "first step passed The message goes to the primary | the primary said: anna@example.com: 250",
        "first step failed The alert recipients get the four notices | the domain has no alert recipients",
        "first password shown False",
        "second started 200 True",
        "second summary Drill failed",
        "second step passed The message is spooled here",
        "second step failed Log in over IMAP as anna@example.com | login refused (imaps 127.0.0.1:",
        "second step passed Stop the outage",
        "second password shown False",
        "audit True True True",
        "msp drills other.org 404",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
    assert!(!out.contains("hear that mail is being spooled"), "{out}");
    let second: Vec<&str> = out.lines().filter(|l| l.starts_with("second step")).collect();
    assert_eq!(
        second.len(),
        5,
        "the second drill stops at the login: {second:#?}"
    );
    assert!(
        !server.log().contains("Drill9wrongHorse"),
        "a drill's password reached the log"
    );
    // The drill's outage is over, the message at the primary.
    let status = server.admin_ok(&["outage", "status"]);
    let line = status
        .lines()
        .find(|l| l.starts_with("example.com"))
        .unwrap_or("");
    assert!(!line.contains("outage"), "{status}");
    assert!(
        sink.messages()
            .iter()
            .any(|(_, m)| m.contains("Subject: Failover drill of example.com")),
        "the drill's message did not reach the primary"
    );
}

/// The dashboard's last probe of each relay host: answered, or failed with why.
#[test]
fn the_dashboard_shows_each_domains_last_probe() {
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = crate::sink::DumpSink::start(sink_dir.path());
    let (relay, dead) = (sink.addr(), format!("127.0.0.1:{}", crate::sink::free_port()));
    let server = TestServer::setup(WEB_CONFIG, |s| {
        for (domain, host) in [("example.com", &relay), ("other.org", &dead)] {
            s.admin_ok(&[
                "domain",
                "add",
                domain,
                "--relay-host",
                host,
                "--engagement",
                "automatic",
                "--monitoring",
                "true",
                "--probe-interval",
                "1",
                "--failures",
                "1000",
            ]);
        }
        add_admin(s, "root", &[]);
    });
    let token = crate::api::token(&server, "root", true);
    let script = format!(
        "{CLIENT_PY}{API_PY}{}",
        r#"
import time
c = Client()
login(c, "root", "Correct1horse")
def probe(body, domain):
    m = re.search(r'data-domain="' + re.escape(domain) + r'".*?<td class="probe">([^<]*)</td>', body, re.S)
    return m.group(1) if m else ""
deadline = time.monotonic() + 120
while True:
    s, body, _ = c.get("/")
    a, b = probe(body, "example.com"), probe(body, "other.org")
    if (a.startswith("answered") and b.startswith("failed")) or time.monotonic() > deadline:
        break
    time.sleep(0.25)
print("example.com", a)
print("other.org", b)
for d in api("GET", "/api/v1/domains", sys.argv[3])[1]:
    print("api", d["domain"], d["last_probe_at"] is not None, d["last_probe_error"] is None, (d["last_probe_error"] or "").lower())
"#
    );
    let mut a = args(&server);
    a.push(token);
    let out = python_ok(&script, &a);
    assert!(out.contains("example.com answered 20"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("other.org failed 20") && l.to_lowercase().contains("refused")),
        "{out}"
    );
    assert!(out.contains("api example.com True True"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("api other.org True False") && l.contains("refused")),
        "{out}"
    );
}

/// Bulk queue actions only act when confirmed: the first post shows the entries and
/// the filter; a confirmation altered, replayed or presented by another session changes
/// nothing and says why; a confirmed one acts on exactly the entries listed (not on
/// mail that arrived in between), and a domain administrator's covers only their
/// domains. The same through the JSON API.
#[test]
fn bulk_queue_actions_act_only_on_an_unaltered_confirmation_and_only_once() {
    let dead = format!("127.0.0.1:{}", crate::sink::free_port());
    let server = TestServer::setup(WEB_CONFIG, |s| {
        for domain in ["example.com", "other.org"] {
            s.admin_ok(&[
                "domain",
                "add",
                domain,
                "--relay-host",
                &dead,
                "--monitoring",
                "false",
            ]);
            s.admin_ok(&["outage", "start", domain]);
        }
        for user in ["anna@example.com", "bert@example.com", "olga@other.org"] {
            s.add_user(user, PASSWORD);
        }
        add_admin(s, "root", &[]);
        add_admin(s, "msp", &["--role", "domain", "--domain", "example.com"]);
    });
    let (root_token, msp_token) = (
        crate::api::token(&server, "root", false),
        crate::api::token(&server, "msp", false),
    );
    let script = format!(
        "{CLIENT_PY}{API_PY}{}",
        r#"
import smtplib, time
SMTP, ROOT, MSP = int(sys.argv[3]), sys.argv[4], sys.argv[5]
def send(to, n):
    s = smtplib.SMTP("127.0.0.1", SMTP, timeout=30)
    s.sendmail("bob@elsewhere.example", [to], "From: bob@elsewhere.example\r\nTo: %s\r\nSubject: bulk %d\r\nMessage-ID: <bulk-%d@elsewhere.example>\r\n\r\nhello\r\n" % (to, n, n))
    s.quit()
def relay(n):
    deadline = time.monotonic() + 60
    while True:
        items = [i for i in api("GET", "/api/v1/queue", ROOT)[1] if i["kind"] == "relay"]
        if len(items) >= n or time.monotonic() > deadline:
            return {i["id"]: i for i in items}
        time.sleep(0.1)
def held():
    return sorted(i for i, e in relay(0).items() if e["held"])
def of(entries, address):
    return sorted(i for i, e in entries.items() if e["recipients"][0]["address"] == address)
def flash(body):
    m = re.search(r'class="flash" role="status">([^<]*)<', body)
    return m.group(1).strip() if m else "-"
def refused(body):
    m = re.search(r'id="refused">([^<]*)<', body)
    return m.group(1).strip() if m else "-"
def listed(body):
    return sorted(int(x) for x in re.findall(r'<td class="id"><a href="/queue/(\d+)"', body.split('id="confirm-entries"')[1].split("</table>")[0]))
def confirmation(body):
    return re.search(r'name="confirmation" value="([0-9a-f]+)"', body).group(1)
for n, to in enumerate(["anna@example.com", "anna@example.com", "bert@example.com", "olga@other.org"]):
    send(to, n)
entries = relay(4)
anna, bert, olga = of(entries, "anna@example.com"), of(entries, "bert@example.com"), of(entries, "olga@other.org")
print("queued", len(anna), len(bert), len(olga))
c = Client()
s, body, _ = login(c, "root", "Correct1horse")
s, body, _ = c.get("/queue?domain=example.com&recipient=anna")
hold_anna = {"csrf": csrf(body), "action": "hold", "scope": "filter", "f_domain": "example.com", "f_kind": "", "f_state": "", "f_recipient": "anna"}
# Unconfirmed: the entries, their count and the filter; nothing held.
s, body, _ = c.post("/queue/bulk", hold_anna)
q = re.search(r'id="confirm-question"><strong>([^<]*)<', body).group(1)
print("unconfirmed", s, q, "| filter shown", "domain example.com, recipient anna" in body, "| listed anna", listed(body) == anna, "| held", held())
token = confirmation(body)
# Altered: the same confirmation with the recipient taken off the filter.
s, body, _ = c.post("/queue/bulk", dict(hold_anna, f_recipient="", confirmation=token))
print("altered", s, refused(body), "| held", held())
s, body, _ = c.post("/queue/bulk", dict(hold_anna, action="purge", confirmation=token))
print("altered then", s, refused(body), "| queued", len(relay(4)))
# Confirmed, with one more message for anna arriving in between: only the two listed.
s, body, _ = c.post("/queue/bulk", hold_anna)
token = confirmation(body)
send("anna@example.com", 9)
late = sorted(set(relay(5)) - set(entries))
s, body, _ = c.post("/queue/bulk", dict(hold_anna, confirmation=token))
print("confirmed", s, flash(body), "| held exactly the listed", held() == anna, "| late one held", late[0] in held())
# Replayed: refused, the late message still not held.
s, body, _ = c.post("/queue/bulk", dict(hold_anna, confirmation=token))
print("replayed", s, refused(body), "| held", held() == anna)
# Another session's confirmation, and a domain administrator's selection.
release_all = {"csrf": csrf(body), "action": "release", "scope": "filter", "f_domain": "", "f_kind": "", "f_state": "", "f_recipient": ""}
s, body, _ = c.post("/queue/bulk", release_all)
root_token = confirmation(body)
print("root would release", listed(body) == sorted(relay(5)))
m = Client()
s, body, _ = login(m, "msp", "Correct1horse")
s, body, _ = m.get("/queue")
mcsrf = csrf(body)
s, body, _ = m.post("/queue/bulk", dict(release_all, csrf=mcsrf, confirmation=root_token))
print("foreign", s, refused(body), "| held", held() == anna)
print("msp filter on other.org", m.post("/queue/bulk", dict(release_all, csrf=mcsrf, f_domain="other.org"))[0])
ticked = [("csrf", mcsrf), ("action", "hold"), ("scope", "ticked"), ("f_domain", ""), ("f_kind", ""), ("f_state", ""), ("f_recipient", ""), ("id", str(olga[0])), ("id", str(bert[0]))]
s, body, _ = m.post("/queue/bulk", ticked)
print("msp ticked olga and bert, listed", listed(body) == bert)
s, body, _ = m.post("/queue/bulk", ticked + [("confirmation", confirmation(body))])
print("msp confirmed", s, flash(body), "| olga held", olga[0] in held(), "| bert held", bert[0] in held())
# root's confirmation still works for root after msp tried it.
s, body, _ = c.post("/queue/bulk", dict(release_all, confirmation=root_token))
print("root released", s, flash(body), "| held", held())
# The JSON API: preview, altered, confirmed, replayed, another token's.
hold_olga = {"action": "hold", "filter": {"domain": "other.org"}}
s, p = api("POST", "/api/v1/queue/bulk/preview", ROOT, hold_olga)
print("api preview", s, p["count"], p["description"], [e["id"] for e in p["entries"]] == olga, "| held", held())
print("api msp preview other.org", api("POST", "/api/v1/queue/bulk/preview", MSP, hold_olga)[0])
s, e = api("POST", "/api/v1/queue/bulk/confirm", MSP, dict(hold_olga, confirmation=p["confirmation"]))
print("api msp with root's confirmation", s, e["error"])
s, e = api("POST", "/api/v1/queue/bulk/confirm", ROOT, dict(hold_olga, action="bounce", confirmation=p["confirmation"]))
print("api altered", s, e["error"], "| held", held())
s, p = api("POST", "/api/v1/queue/bulk/preview", ROOT, hold_olga)
s, r = api("POST", "/api/v1/queue/bulk/confirm", ROOT, dict(hold_olga, confirmation=p["confirmation"]))
print("api confirmed", s, r["changed"], r["message"], "| held", held() == olga)
s, e = api("POST", "/api/v1/queue/bulk/confirm", ROOT, dict(hold_olga, confirmation=p["confirmation"]))
print("api replayed", s, e["error"])
s, body, _ = c.get("/audit")
print("audited", "queue hold" in body and "filter: domain example.com, recipient anna" in body)
"#
    );
    let mut a = args(&server);
    a.push(server.addr("smtp").port().to_string());
    a.push(root_token);
    a.push(msp_token);
    let out = python_ok(&script, &a);
    for expected in [
        "queued 2 1 1",
        "unconfirmed 200 Hold 2 entries? | filter shown True | listed anna True | held []",
        "altered 409 this confirmation was for every entry of the filter (domain example.com, recipient anna), not every entry of the filter (domain example.com): nothing was changed | held []",
        "altered then 409 this confirmation was used already",
        "| queued 4",
        "confirmed 200 2 entries held | held exactly the listed True | late one held False",
        "replayed 409 this confirmation was used already",
        "replayed 409 this confirmation was used already, at ",
        "root would release True",
        "foreign 409 this confirmation was given to another session or API token: nothing was changed | held True",
        "msp filter on other.org 404",
        "msp ticked olga and bert, listed True",
        "msp confirmed 200 1 entries held | olga held False | bert held True",
        "root released 200 3 entries released; not released: 2 were released already | held []",
        "api preview 200 1 domain other.org True | held []",
        "api msp preview other.org 404",
        "api msp with root's confirmation 404 not found",
        "api altered 409 this confirmation was for hold, not bounce: nothing was changed | held []",
        "api confirmed 200 1 1 entries held | held True",
        "api replayed 409 this confirmation was used already",
        "audited True",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
}

/// The dashboard lists each domain's notices to its alert recipients since its current
/// or last outage began, with whether each was delivered.
#[test]
fn the_dashboard_lists_the_notices_of_the_last_outage() {
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = crate::sink::DumpSink::start(sink_dir.path());
    let alerts_dir = tempfile::tempdir().unwrap();
    let alerts = crate::sink::DumpSink::start(alerts_dir.path());
    let config = format!(
        "{WEB_CONFIG}[delivery.routes]\n\"alerts.example\" = \"{}\"\n",
        alerts.addr()
    );
    let relay = sink.addr();
    let server = TestServer::setup(&config, |s| {
        add_relayed_domains(s, &relay, &["--alert", "ops@alerts.example"]);
        s.add_user("anna@example.com", PASSWORD);
        add_admin(s, "root", &[]);
    });
    let script = format!(
        "{CLIENT_PY}{}",
        r#"
import time
c = Client()
login(c, "root", "Correct1horse")
def notices(domain):
    s, body, _ = c.get("/")
    cell = re.search(r'data-domain="' + re.escape(domain) + r'".*?<td class="notices">(.*?)</td>', body, re.S).group(1)
    return re.findall(r'<li class="notice-(\w+)">([^<]*)</li>', cell), re.sub(r"<[^>]+>", " ", cell)
print("before", notices("example.com")[1].split())
def wait_for(names):
    deadline = time.monotonic() + 120
    while True:
        found, text = notices("example.com")
        delivered = [t.split(" 20")[0] for state, t in found if state == "delivered"]
        if all(n in delivered for n in names) or time.monotonic() > deadline:
            return delivered, text
        time.sleep(0.25)
s, body, _ = c.get("/domains/example.com")
c.post("/domains/example.com/outage", {"action": "start", "reason": "notices test", "csrf": csrf(body)})
print("during", wait_for(["outage began"])[0])
s, body, _ = c.get("/domains/example.com")
c.post("/domains/example.com/outage", {"action": "stop", "reason": "done", "csrf": csrf(body)})
delivered, text = wait_for(["outage began", "primary back", "all spooled mail released"])
print("after", delivered)
print("to", "to ops@alerts.example" in text)
print("other.org", notices("other.org")[1].split())
"#
    );
    let out = python_ok(&script, &args(&server));
    for expected in [
        "before ['last', 'reminder', '-']",
        "during ['outage began']",
        "to True",
        "other.org ['last', 'reminder', '-']",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
    let after = out.lines().find(|l| l.starts_with("after ")).unwrap_or_default();
    for name in ["outage began", "primary back", "all spooled mail released"] {
        assert!(
            after.contains(&format!("'{name}'")),
            "{name} missing from:\n{out}"
        );
    }
}

/// The queue entry page's bounce, once confirmed, gives the entry up and sends its
/// sender an RFC 3464 report: the sender's domain is routed to a stand-in, whose copy
/// Python's `email` package parses (multipart/report, message/delivery-status with
/// Reporting-MTA, Final-Recipient, Action: failed and a 5.x.x Status).
#[test]
fn a_bounce_from_the_queue_page_sends_the_sender_an_rfc3464_report() {
    let dead = format!("127.0.0.1:{}", crate::sink::free_port());
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = crate::sink::DumpSink::start(sink_dir.path());
    let config = format!(
        "{WEB_CONFIG}[delivery]\npoll_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\nroutes = {{ \"elsewhere.example\" = \"{}\" }}\n",
        sink.addr()
    );
    let server = TestServer::setup(&config, |s| {
        add_relayed_domains(s, &dead, &[]);
        s.admin_ok(&["outage", "start", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
        add_admin(s, "root", &[]);
    });
    let script = format!(
        "{CLIENT_PY}{}",
        r#"
import smtplib, time
SMTP = int(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", SMTP, timeout=30)
s.sendmail("bob@elsewhere.example", ["anna@example.com"], "From: bob@elsewhere.example\r\nTo: anna@example.com\r\nSubject: to be bounced\r\nMessage-ID: <bounce-me@elsewhere.example>\r\n\r\nhello\r\n")
s.quit()
c = Client()
s, body, _ = login(c, "root", "Correct1horse")
deadline = time.monotonic() + 60
ids = []
while not ids and time.monotonic() < deadline:
    s, body, _ = c.get("/queue?domain=example.com")
    ids = re.findall(r'<td class="id"><a href="/queue/(\d+)"', body)
    if not ids:
        time.sleep(0.2)
entry = ids[0]
s, body, _ = c.get("/queue/" + entry)
s, body, _ = c.post("/queue/bulk", [("csrf", csrf(body)), ("id", entry), ("f_domain", "example.com"), ("action", "bounce")])
print("asked", s, re.search(r'id="confirm-question"><strong>([^<]*)<', body).group(1))
form = body.split('action="/queue/bulk"')[-1].split("</form>")[0]
fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)
s, body, _ = c.post("/queue/bulk", fields)
print("bounced", s, re.search(r'class="flash" role="status">([^<]*)<', body).group(1).strip())
"#
    );
    let mut a = args(&server);
    a.push(server.addr("smtp").port().to_string());
    let out = python_ok(&script, &a);
    assert!(out.contains("asked 200 Bounce 1 entries?"), "{out}");
    assert!(out.contains("bounced 200 "), "{out}");
    wait_until(
        std::time::Duration::from_secs(60),
        "the DSN at the stand-in",
        || {
            sink.messages()
                .iter()
                .any(|(_, m)| m.contains("multipart/report"))
        },
    );
    let (_, dsn) = sink
        .messages()
        .into_iter()
        .find(|(_, m)| m.contains("multipart/report"))
        .unwrap();
    let file = sink_dir.path().join("the-dsn.eml");
    std::fs::write(&file, &dsn).unwrap();
    let parse = r#"
import email, email.policy, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
print("type", m.get_content_type(), "report-type", m.get_param("report-type"))
print("to", m["To"])
parts = list(m.iter_parts())
print("parts", [p.get_content_type() for p in parts])
status = next(p for p in parts if p.get_content_type() == "message/delivery-status")
# The per-message fields, then one block per recipient (RFC 3464 section 2.1).
blocks = status.get_payload()
print("reporting-mta", blocks[0]["Reporting-MTA"])
for b in blocks[1:]:
    print("recipient", b["Final-Recipient"], "|", b["Action"], "|", b["Status"], "|", b["Diagnostic-Code"])
original = [p for p in parts if p.get_content_type() in ("message/rfc822", "text/rfc822-headers")]
print("original", len(original), "bounce-me@elsewhere.example" in original[0].as_string() if original else False)
"#;
    let parsed = python_ok(parse, &[file.display().to_string()]);
    println!("{out}{parsed}");
    for expected in [
        "type multipart/report report-type delivery-status",
        "bob@elsewhere.example",
        "message/delivery-status",
        "reporting-mta dns; ",
        "recipient rfc822; anna@example.com | failed | 5.3.0 | x-understudy; 550 5.3.0 returned to the sender by an administrator",
        "original 1 True",
    ] {
        assert!(parsed.contains(expected), "{expected} missing from:\n{parsed}");
    }
    assert_eq!(
        parsed.lines().filter(|l| l.starts_with("recipient")).count(),
        1,
        "{parsed}"
    );
}

/// Issue 16: console sessions and bulk confirmations lived in one node's memory, so two
/// nodes behind a balancer logged administrators out and a restart did too. Now in the
/// store: on two nodes sharing one PostgreSQL store, a login on node A works on node B;
/// a confirmation shown on A is used on B, and only once (A refuses it after); after
/// node B restarts the same cookie is still logged in.
#[test]
fn sessions_and_confirmations_hold_on_every_node_and_across_a_restart() {
    let pg_dir = tempfile::tempdir().unwrap();
    let dead = format!("127.0.0.1:{}", crate::sink::free_port());
    let config = format!("{WEB_CONFIG}{}", crate::postgres::store_config(pg_dir.path()));
    let a = TestServer::setup(&config, |s| {
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            &dead,
            "--monitoring",
            "false",
        ]);
        s.admin_ok(&["outage", "start", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
        add_admin(s, "root", &[]);
    });
    let mut b = TestServer::setup(&config, |_| {});
    let script = format!(
        "{CLIENT_PY}{}",
        r#"
import smtplib, time
A, B, SMTP = PORT, int(sys.argv[3]), int(sys.argv[4])
def on(port):
    global BASE
    BASE = "https://localhost:%d" % port
def ids(body):
    return sorted(int(x) for x in re.findall(r'<td class="id"><a href="/queue/(\d+)"', body))
def flash(body):
    m = re.search(r'class="flash" role="status">([^<]*)<', body)
    return m.group(1).strip() if m else "-"
def refused(body):
    m = re.search(r'id="refused">([^<]*)<', body)
    return m.group(1).strip() if m else "-"
for n in range(2):
    s = smtplib.SMTP("127.0.0.1", SMTP, timeout=30)
    s.sendmail("bob@elsewhere.example", ["anna@example.com"], "Subject: two nodes %d\r\nMessage-ID: <nodes-%d@elsewhere.example>\r\n\r\nhello\r\n" % (n, n))
    s.quit()
c = Client(follow=False)
on(A)
s, body, to = login(c, "root", "Correct1horse")
print("login on A", s, to)
on(B)
s, body, _ = c.get("/")
print("dashboard on B", s, "Log out" in body)
deadline = time.monotonic() + 60
while True:
    s, body, _ = c.get("/queue?domain=example.com")
    if len(ids(body)) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.1)
print("queue on B", s, len(ids(body)))
on(A)
s, body, _ = c.get("/queue?domain=example.com")
hold = {"csrf": csrf(body), "action": "hold", "scope": "filter", "f_domain": "example.com", "f_kind": "", "f_state": "", "f_recipient": ""}
s, body, _ = c.post("/queue/bulk", hold)
token = re.search(r'name="confirmation" value="([0-9a-f]+)"', body).group(1)
print("confirmation shown on A", s)
on(B)
s, body, _ = c.post("/queue/bulk", dict(hold, confirmation=token))
print("confirmed on B", s, flash(body))
on(A)
s, body, _ = c.post("/queue/bulk", dict(hold, confirmation=token))
print("replayed on A", s, refused(body))
print("cookie", c.cookie("__Host-us_session"))
"#
    );
    let out = python_ok(
        &script,
        &[
            ca_cert().display().to_string(),
            a.addr("web").port().to_string(),
            b.addr("web").port().to_string(),
            a.addr("smtp").port().to_string(),
        ],
    );
    for expected in [
        "login on A 303 /",
        "dashboard on B 200 True",
        "queue on B 200 2",
        "confirmation shown on A 200",
        "confirmed on B 200 2 entries held",
        "replayed on A 409 this confirmation was used already",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
    let cookie = out
        .lines()
        .find_map(|l| l.strip_prefix("cookie "))
        .expect("the session cookie")
        .to_string();
    b.restart();
    let again = format!(
        "{CLIENT_PY}{}",
        r#"
c = Client(follow=False)
c.set_cookie("__Host-us_session", sys.argv[3])
s, body, _ = c.get("/")
print("after the restart", s, "Log out" in body)
"#
    );
    let out = python_ok(
        &again,
        &[
            ca_cert().display().to_string(),
            b.addr("web").port().to_string(),
            cookie,
        ],
    );
    assert!(out.contains("after the restart 200 True"), "{out}");
}

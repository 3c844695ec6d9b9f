//! LDAP sync and directory-down logins against a real OpenLDAP `slapd` (Debian `slapd`
//! and `ldap-utils`), started on a loopback port with a throwaway config, the dev
//! certificate for StartTLS, and an LDIF of users with aliases and a disabled account.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{ca_cert, plain_log, python_ok, repo, wait_log, wait_output, TestServer, PASSWORD};

const SLAPD: &str = "/usr/sbin/slapd";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
const ADMIN_PW: &str = "Admin1secret";

/// A schema for `mailAlternateAddress` (Debian's schemas have only `mailLocalAddress`,
/// in misc.schema); the OID arc is a private test one.
const MAIL_SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'mailAlternateAddress'
\tEQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
\tSYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'mailAlternateRecipient' SUP top AUXILIARY
\tMAY ( mailAlternateAddress ) )
";

fn person(uid: &str, name: &str, mail: &str, password: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,dc=example,dc=com\n\
         objectClass: inetOrgPerson\n\
         objectClass: mailAlternateRecipient\n\
         objectClass: inetLocalMailRecipient\n\
         uid: {uid}\ncn: {name}\nsn: {uid}\nmail: {mail}\nuserPassword: {password}\n{extra}\n"
    )
}

fn users_ldif() -> String {
    let mut ldif = String::from(
        "dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: cn=understudy,dc=example,dc=com\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: understudy\nuserPassword: Service1secret\n\n",
    );
    ldif += &person(
        "anna",
        "Anna Andersson",
        "anna@example.com",
        "Anna1secret",
        "displayName: Anna A.\nmailAlternateAddress: a@example.com\nmailAlternateAddress: sales@example.com\n\
         mailAlternateAddress: anna@elsewhere.org\nmailLocalAddress: anna.andersson@example.com\n",
    );
    ldif += &person(
        "bob",
        "Bob Berg",
        "bob@example.com",
        "Bob1secret",
        "mailLocalAddress: b@example.com\n",
    );
    ldif += &person("carl", "Carl Conrad", "carl@example.com", "Carl1secret", "");
    ldif += &person(
        "dora",
        "Dora Dahl",
        "dora@example.com",
        "Dora1secret",
        "employeeType: disabled\n",
    );
    ldif += &person("eve", "Eve Ek", "eve@other.org", "Eve1secret", "");
    ldif += &person("fred", "Fred Fors", "fred@example.com", "Fred1secret", "");
    ldif
}

/// A throwaway slapd in a temp directory; killed on drop.
pub struct Slapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// `ldaps://` (TLS from the first byte) instead of `ldap://` with StartTLS.
    ldaps: bool,
}

impl Slapd {
    /// The directory of these tests: people under `ou=people,dc=example,dc=com`,
    /// `ldap://` with StartTLS.
    fn start() -> Slapd {
        Slapd::start_with("", &users_ldif(), false)
    }

    /// A directory under `dc=example,dc=com` with the test schemas plus `schema`, holding
    /// the entries of `ldif` (added as its admin), on `ldaps://` if `ldaps`.
    pub fn start_with(schema: &str, ldif: &str, ldaps: bool) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        std::fs::write(d.join("mail.schema"), format!("{MAIL_SCHEMA}{schema}")).unwrap();
        let certs = repo().join("certs-dev");
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/misc.schema\n\
             include {d}/mail.schema\n\
             pidfile {d}/slapd.pid\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             TLSCertificateFile {certs}/server.crt\nTLSCertificateKeyFile {certs}/server.key\n\
             database mdb\nmaxsize 10485760\nsuffix \"dc=example,dc=com\"\n\
             rootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PW}\ndirectory {d}/db\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             access to * by users read by * none\n",
            d = d.display(),
            certs = certs.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        // A free port: bound and released here (slapd cannot report one it picked).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut slapd = Slapd {
            child: None,
            dir,
            port,
            ldaps,
        };
        slapd.launch();
        slapd.modify("ldapadd", ldif);
        slapd
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        // -d 256 (stats): stay in the foreground (a child we can kill) and log each
        // connection and operation, written before its result, to slapd.log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("slapd.log"))
            .unwrap();
        let child = Command::new(SLAPD)
            .args(["-d", "256", "-h", &format!("{}/", self.url())])
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slapd (apt-get install slapd ldap-utils)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "slapd did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The operations log (`-d 256`): a `BIND dn="…" method=128` line per bind.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    pub fn url(&self) -> String {
        let scheme = if self.ldaps { "ldaps" } else { "ldap" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Runs `ldapadd` or `ldapmodify` as the directory's admin, over TLS (StartTLS on
    /// `ldap://`).
    pub fn modify(&self, tool: &str, ldif: &str) {
        let file = self.dir.path().join("change.ldif");
        std::fs::write(&file, ldif).unwrap();
        let child = Command::new(tool)
            .args(if self.ldaps { &[][..] } else { &["-ZZ"][..] })
            .args(["-x", "-H", &self.url(), "-D", ADMIN_DN, "-w", ADMIN_PW, "-f"])
            .arg(&file)
            .env("LDAPTLS_CACERT", ca_cert())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ldap_config(slapd: &Slapd, password_file: &Path) -> String {
    format!(
        r#"
[[ldap]]
domain = "example.com"
url = "{url}"
ca_file = "{ca}"
bind_dn = "cn=understudy,dc=example,dc=com"
bind_password_file = "{pw}"
base_dn = "ou=people,dc=example,dc=com"
preset = "openldap"
disabled_attribute = "employeeType"
disabled_value = "disabled"
page_size = 2
sync_interval_secs = 3600
login = "bind"
"#,
        url = slapd.url(),
        ca = ca_cert().display(),
        pw = password_file.display()
    )
}

/// Logs in over IMAPS once per `user password` pair; prints `user OK` or `user NO ...`.
const IMAP_LOGINS: &str = r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
for spec in sys.argv[3:]:
    user, password = spec.split(" ", 1)
    m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ctx, timeout=30)
    try:
        m.login(user, password)
        print(user, "OK")
    except imaplib.IMAP4.error as e:
        print(user, "NO", e)
    try:
        m.logout()
    except Exception:
        pass
"#;

pub fn logins(server: &TestServer, attempts: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec![
        ca_cert().display().to_string(),
        server.addr("imaps").port().to_string(),
    ];
    args.extend(attempts.iter().map(|(u, p)| format!("{u} {p}")));
    python_ok(IMAP_LOGINS, &args)
        .lines()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(":"))
        .collect()
}

fn password_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("ldap-password");
    std::fs::write(&path, "Service1secret\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn sync_then_bind_logins_survive_the_directory_going_down() {
    let mut slapd = Slapd::start();
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = password_file(secrets.path());
    let mut server = TestServer::setup(&ldap_config(&slapd, &pw_file), |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        // Directly on the store (no server yet): a dry run changes nothing.
        let dry = s.admin_ok(&["ldap", "sync", "--dry-run"]);
        assert!(dry.contains("would create anna@example.com"), "{dry}");
        assert!(
            dry.contains("dry run, nothing changed: ldap sync example.com: 5 created, 0 updated, 0 deactivated, 0 unchanged, 1 skipped"),
            "{dry}"
        );
        assert!(!s.admin_ok(&["user", "list"]).contains("anna@example.com"));

        let first = s.admin_ok(&["ldap", "sync"]);
        assert!(
            first.contains(
                "ldap sync example.com: 5 created, 0 updated, 0 deactivated, 0 unchanged, 1 skipped"
            ),
            "{first}"
        );
        assert!(
            first.contains(
                "skipped uid=eve,ou=people,dc=example,dc=com: address eve@other.org is not in example.com"
            ),
            "{first}"
        );
        let anna = s.admin_ok(&["user", "show", "anna@example.com"]);
        assert!(anna.contains("name:          Anna A."), "{anna}");
        assert!(
            anna.contains("aliases:       a@example.com, anna.andersson@example.com, sales@example.com"),
            "{anna}"
        );
        let users = s.admin_ok(&["user", "list", "example.com", "--format", "csv"]);
        assert!(users.contains("dora@example.com,inactive,"), "{users}");
        assert!(users.contains("bob@example.com,active,"), "{users}");

        let second = s.admin_ok(&["ldap", "sync"]);
        assert!(
            second.contains(
                "ldap sync example.com: 0 created, 0 updated, 0 deactivated, 5 unchanged, 1 skipped"
            ),
            "{second}"
        );
    });

    // The server syncs at start-up (and every sync_interval_secs) and logs the counts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("ldap sync") {
        assert!(
            Instant::now() < deadline,
            "no periodic sync logged:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = plain_log(&mut server);
    assert!(
        log.contains("created=0 updated=0 deactivated=0 unchanged=5 skipped=1"),
        "{log}"
    );

    // An alias removed, a user disabled and one deleted in the directory; the sync runs
    // through the admin socket of the running server.
    slapd.modify(
        "ldapmodify",
        "dn: uid=anna,ou=people,dc=example,dc=com\nchangetype: modify\ndelete: mailAlternateAddress\nmailAlternateAddress: sales@example.com\n\n\
         dn: uid=bob,ou=people,dc=example,dc=com\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n\n\
         dn: uid=carl,ou=people,dc=example,dc=com\nchangetype: delete\n",
    );
    let third = server.admin_ok(&["ldap", "sync", "--domain", "example.com"]);
    for expected in [
        "updated anna@example.com: -alias sales@example.com",
        "deactivated bob@example.com: disabled in the directory",
        "deactivated carl@example.com: not in the directory",
        "ldap sync example.com: 0 created, 1 updated, 2 deactivated, 2 unchanged, 1 skipped",
    ] {
        assert!(third.contains(expected), "missing {expected:?} in:\n{third}");
    }
    let again = server.admin_ok(&["ldap", "sync"]);
    assert!(
        again.contains("0 created, 0 updated, 0 deactivated, 5 unchanged"),
        "{again}"
    );
    let carl = server.admin_ok(&["user", "show", "carl@example.com"]);
    assert!(carl.contains("status:        Inactive"), "{carl}");

    // Bind logins while the directory is up: its answer decides.
    assert_eq!(
        logins(
            &server,
            &[
                ("anna@example.com", "Anna1secret"),
                ("anna@example.com", "wrong"),
                ("dora@example.com", "Dora1secret"),
                ("bob@example.com", "Bob1secret"),
            ]
        ),
        [
            "anna@example.com:OK",
            "anna@example.com:NO",
            "dora@example.com:NO",
            "bob@example.com:NO"
        ]
    );
    // The directory changes Anna's password: the old one is refused although it is the
    // one cached, and the new one replaces it in the cache.
    slapd.modify(
        "ldapmodify",
        "dn: uid=anna,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: userPassword\nuserPassword: Anna2secret\n",
    );
    assert_eq!(
        logins(
            &server,
            &[
                ("anna@example.com", "Anna1secret"),
                ("anna@example.com", "Anna2secret")
            ]
        ),
        ["anna@example.com:NO", "anna@example.com:OK"]
    );

    // The directory goes down: Anna logged in before and still can, with the password
    // the directory last accepted only; Fred never logged in and cannot.
    slapd.kill();
    assert_eq!(
        logins(
            &server,
            &[
                ("anna@example.com", "Anna2secret"),
                ("anna@example.com", "Anna1secret"),
                ("fred@example.com", "Fred1secret"),
            ]
        ),
        [
            "anna@example.com:OK",
            "anna@example.com:NO",
            "fred@example.com:NO"
        ]
    );
    let log = plain_log(&mut server);
    assert!(
        log.contains("directory unreachable: checking the cached password"),
        "{log}"
    );
    for secret in ["Anna1secret", "Anna2secret", "Fred1secret", "Service1secret"] {
        assert!(!log.contains(secret), "a password reached the log");
    }
    // And a sync with the directory down fails without changing anyone.
    let out = server.admin(&["ldap", "sync"], None);
    assert!(!out.status.success());
    assert!(server
        .admin_ok(&["user", "show", "anna@example.com"])
        .contains("status:        Active"));
}

/// Not LDAP, but the other half of issue 7's password rules: a password set with
/// `--force-reset` is refused with a reply saying it must be changed.
#[test]
fn forced_password_reset_gets_a_clear_refusal() {
    let server = TestServer::start();
    let out = server.admin(
        &["user", "passwd", "anna@example.com", "--stdin", "--force-reset"],
        Some("Temporary1pass\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = r#"
import imaplib, poplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ctx, timeout=30)
for password in ("Temporary1pass", "wrong"):
    try:
        m.login("anna@example.com", password)
        print("imap OK")
    except imaplib.IMAP4.error as e:
        print("imap", e.args[0].decode())
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[3]), context=ctx, timeout=30)
p.user("anna@example.com")
try:
    p.pass_("Temporary1pass")
    print("pop3 OK")
except poplib.error_proto as e:
    print("pop3", e.args[0].decode())
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
            server.addr("pop3s").port().to_string(),
        ],
    );
    assert!(
        out.contains("imap [EXPIRED] Your password must be changed; ask your administrator for a new one"),
        "{out}"
    );
    assert!(out.contains("imap [AUTHENTICATIONFAILED]"), "{out}");
    assert!(
        out.contains("pop3 -ERR [AUTH] your password must be changed; ask your administrator for a new one"),
        "{out}"
    );
}

/// SIGHUP puts a new `[[ldap]]` section in force (issue 18 item 1): the server syncs
/// the directory at once and bind logins use it, without a restart.
#[test]
fn a_reload_adds_a_directory_that_syncs_and_checks_logins() {
    let slapd = Slapd::start();
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = password_file(secrets.path());
    let mut server = TestServer::setup("", |s| {
        s.admin_ok(&["domain", "add", "example.com", "--monitoring", "false"]);
    });
    assert!(!server.admin_ok(&["user", "list"]).contains("anna@example.com"));
    let mut config = std::fs::read_to_string(&server.config).unwrap();
    config.push_str(&ldap_config(&slapd, &pw_file));
    std::fs::write(&server.config, config).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    crate::harness::wait_log(&mut server, "configuration reloaded");
    let line = plain_log(&mut server)
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("ldap"),
        "the reload does not name [[ldap]] as applied: {line}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.admin_ok(&["user", "list"]).contains("anna@example.com") {
        assert!(
            Instant::now() < deadline,
            "the new directory was not synced after the reload:\n{}",
            plain_log(&mut server)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A bind login: the directory's password, never set in Understudy.
    assert_eq!(
        logins(&server, &[("anna@example.com", "Anna1secret")]),
        ["anna@example.com:OK"]
    );
}

/// What every login below does, per protocol: the binds slapd logged and the argon2 runs
/// the server counted (`understudy_password_hashes_total`), before and after each one.
const WORK_PER_LOGIN: &str = r#"
import imaplib, urllib.request
IMAPS, METRICS, SLAPD_LOG = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def hashes():
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % METRICS, timeout=10).read().decode()
    return int(re.search(r"^understudy_password_hashes_total (\d+)$", text, re.M).group(1))
def binds():
    with open(SLAPD_LOG, errors="replace") as f:
        return sum(1 for l in f if " BIND dn=" in l and " method=" in l)
def imap(user, password):
    m = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=CTX, timeout=60)
    try:
        m.login(user, password)
        answer = "OK"
    except imaplib.IMAP4.error:
        answer = "NO"
    try:
        m.logout()
    except Exception:
        pass
    return answer
def web(user, password):
    return raw_login("/me/login", {"address": user, "password": password}).split("\n")[0].split(" ")[1]
W = "Wrong1horse"
for proto, login in [("imap", imap), ("web", web)]:
    for case, user, password in [
        ("unknown address", "nobody@example.com", W),
        ("wrong password", "bob@example.com", W),
        ("deactivated, right password", "dora@example.com", "Dora1secret"),
        ("deactivated, wrong password", "dora@example.com", W),
        ("not in the directory", "local@example.com", W),
        ("right password", "carl@example.com", "Carl1secret"),
    ]:
        b, h = binds(), hashes()
        answer = login(user, password)
        print("%s|%s|%s|binds %d|argon2 %d" % (proto, case, answer, binds() - b, hashes() - h))
"#;

/// Issue 16, no user enumeration: on a `login = "bind"` domain an unknown address cost
/// one argon2 check and no bind, a known user's wrong password a bind and no argon2, so
/// the time told them apart. Now every failure costs the same binds at the directory
/// (counted in slapd's own log) and one argon2 check (counted by the server), on IMAP
/// LOGIN and on the users' login page alike.
#[test]
fn the_directory_and_argon2_work_is_the_same_for_every_failed_login() {
    let slapd = Slapd::start();
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = password_file(secrets.path());
    let config = format!(
        "{}{}[metrics]\nlisten = \"127.0.0.1:0\"\n[auth]\nfailure_delay_ms = 20\n",
        crate::console::WEB_CONFIG,
        ldap_config(&slapd, &pw_file)
    );
    let mut server = TestServer::setup(&config, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.admin_ok(&["ldap", "sync"]);
        // A user made by hand in the directory's domain: the search finds no entry.
        s.add_user("local@example.com", PASSWORD);
    });
    // The start-up sync binds too: measured after it.
    wait_log(&mut server, "ldap sync domain=example.com");
    let out = python_ok(
        &format!("{}{WORK_PER_LOGIN}", crate::console::RAW_LOGIN_PY),
        &[
            ca_cert().display().to_string(),
            server.addr("web").port().to_string(),
            server.addr("imaps").port().to_string(),
            server.addr("metrics").port().to_string(),
            slapd.log_path().display().to_string(),
        ],
    );
    println!("{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split('|').collect())
        .filter(|r: &Vec<&str>| r.len() == 5)
        .collect();
    assert_eq!(rows.len(), 12, "{out}");
    for proto in ["imap", "web"] {
        let failed: Vec<&Vec<&str>> = rows
            .iter()
            .filter(|r| r[0] == proto && r[1] != "right password")
            .collect();
        let refused = if proto == "imap" { "NO" } else { "401" };
        for row in &failed {
            assert_eq!(row[2], refused, "{proto} {}: refused\n{out}", row[1]);
            assert_eq!(
                row[3..],
                failed[0][3..],
                "{proto} {}: the same work as {}\n{out}",
                row[1],
                failed[0][1]
            );
        }
        // The work is real: the search-then-bind (service account, then the user or a
        // decoy DN) and one argon2 check.
        assert_eq!(failed[0][3..], ["binds 2", "argon2 1"], "{proto}\n{out}");
        let ok = rows
            .iter()
            .find(|r| r[0] == proto && r[1] == "right password")
            .unwrap();
        let answer = if proto == "imap" { "OK" } else { "303" };
        assert_eq!(ok[2], answer, "{proto}: the right password logs in\n{out}");
        assert_eq!(ok[3], "binds 2", "{proto}\n{out}");
    }
}

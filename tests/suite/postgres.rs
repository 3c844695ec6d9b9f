//! The server on the PostgreSQL store (`[store] backend = "postgres"`), against a
//! throwaway PostgreSQL 15 (storage/tests/support/pg.rs): admin commands before start,
//! SMTP delivery, IMAP with IDLE, a restart, and no RocksDB directory anywhere.

use crate::harness::*;

#[path = "../../storage/tests/support/pg.rs"]
mod pg;

fn store_config(dir: &std::path::Path) -> String {
    format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 4\ntls = \"off\"\n",
        pg::url_for(dir)
    )
}

const DELIVER_AND_READ: &str = r#"
import imaplib, smtplib, ssl, sys, threading, time
ca, smtp_port, imaps_port, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def send(n):
    s = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
    s.sendmail("someone@example.net", ["anna@example.com"],
               f"Subject: pg {n}\r\nMessage-ID: <pg{n}@example.net>\r\n\r\nbody {n}\r\n".encode())
    s.quit()
for n in range(first, first + 3):
    send(n)
ctx = ssl.create_default_context(cafile=ca)
m = imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=ctx, timeout=30)
m.login("anna@example.com", "Correct1horse")
m.select("INBOX")
typ, data = m.uid("SEARCH", None, "ALL")
print("uids", data[0].decode())
typ, data = m.uid("FETCH", data[0].split()[-1].decode(), "(BODY.PEEK[TEXT])")
print("last", data[0][1].decode().strip())
# IDLE, then a delivery from another connection: the session hears of it.
tag = m._new_tag().decode()
m.send(f"{tag} IDLE\r\n".encode())
assert m.readline().startswith(b"+")
threading.Timer(0.2, send, args=(first + 3,)).start()
line = m.readline().decode().strip()
print("idle", line)
m.send(b"DONE\r\n")
while not m.readline().decode().startswith(tag):
    pass
m.logout()
"#;

#[test]
fn the_server_runs_on_postgresql_and_keeps_its_mail_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::setup(&store_config(dir.path()), |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });
    let args = |server: &TestServer, first: u32| {
        vec![
            ca_cert().display().to_string(),
            server.addr("smtp").port().to_string(),
            server.addr("imaps").port().to_string(),
            first.to_string(),
        ]
    };
    let out = python_ok(DELIVER_AND_READ, &args(&server, 1));
    assert!(out.contains("uids 1 2 3\n"), "{out}");
    assert!(out.contains("last body 3"), "{out}");
    assert!(out.contains("idle * 4 EXISTS"), "{out}");

    server.restart();
    let out = python_ok(DELIVER_AND_READ, &args(&server, 5));
    assert!(out.contains("uids 1 2 3 4 5 6 7\n"), "{out}");
    assert!(out.contains("last body 7"), "{out}");
    assert!(out.contains("idle * 8 EXISTS"), "{out}");
    assert!(
        !server.dir.path().join("data/db").exists(),
        "a RocksDB directory was created although the store is PostgreSQL"
    );
}

//! SIGTERM while clients are mid-session: each gets its protocol's goodbye (IMAP `* BYE`
//! during IDLE, POP3 `-ERR`, SMTP `421`), an SMTP DATA in flight is allowed to finish and
//! its message is stored, and the server exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::*;

fn connect(server: &TestServer, service: &str) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(server.addr(service)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    reader.read_line(&mut l).unwrap();
    l
}

/// Reads lines until one starts with `prefix`; returns it.
fn until(reader: &mut BufReader<TcpStream>, prefix: &str) -> String {
    loop {
        let l = line(reader);
        assert!(
            !l.is_empty(),
            "connection closed before a line starting with {prefix:?}"
        );
        if l.starts_with(prefix) {
            return l;
        }
    }
}

#[test]
fn sigterm_says_goodbye_in_each_protocol_and_finishes_smtp_data() {
    // Plaintext logins from loopback so the raw clients stay simple.
    let mut server = TestServer::setup("[auth]\nplaintext_networks = [\"127.0.0.0/8\"]\n", |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });

    let (mut imap, mut imap_r) = connect(&server, "imap");
    until(&mut imap_r, "* OK");
    write!(imap, "a LOGIN anna@example.com {PASSWORD}\r\ns SELECT INBOX\r\n").unwrap();
    until(&mut imap_r, "s OK");
    write!(imap, "b IDLE\r\n").unwrap();
    assert!(line(&mut imap_r).starts_with('+'));

    let (mut pop, mut pop_r) = connect(&server, "pop3");
    until(&mut pop_r, "+OK");
    write!(pop, "USER anna@example.com\r\nPASS {PASSWORD}\r\n").unwrap();
    until(&mut pop_r, "+OK");
    until(&mut pop_r, "+OK");

    let (mut smtp, mut smtp_r) = connect(&server, "smtp");
    until(&mut smtp_r, "220");
    write!(smtp, "EHLO test\r\n").unwrap();
    until(&mut smtp_r, "250 ");
    write!(
        smtp,
        "MAIL FROM:<x@example.net>\r\nRCPT TO:<anna@example.com>\r\nDATA\r\n"
    )
    .unwrap();
    until(&mut smtp_r, "354");
    write!(smtp, "Subject: in flight\r\n\r\nfirst half\r\n").unwrap();
    smtp.flush().unwrap();

    // The server is told to stop while the SMTP transaction is half sent.
    let pid = server.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();

    // IMAP and POP3 are told goodbye at once.
    assert!(until(&mut imap_r, "* BYE").contains("shutting down"));
    assert!(line(&mut pop_r).starts_with("-ERR"));

    // The SMTP client finishes its message and gets 250, then 421.
    write!(smtp, "second half\r\n.\r\n").unwrap();
    let reply = line(&mut smtp_r);
    assert!(reply.starts_with("250"), "{reply}");
    let bye = line(&mut smtp_r);
    assert!(bye.starts_with("421"), "{bye}");
    let mut rest = Vec::new();
    let _ = smtp_r.read_to_end(&mut rest);

    let status = server.wait_exit();
    assert!(status.success(), "exit status {status:?}");

    // The message accepted during shutdown is in the INBOX after a restart.
    server.start_again();
    let (mut pop, mut pop_r) = connect(&server, "pop3");
    until(&mut pop_r, "+OK");
    write!(
        pop,
        "USER anna@example.com\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n"
    )
    .unwrap();
    until(&mut pop_r, "+OK");
    until(&mut pop_r, "+OK");
    let stat = until(&mut pop_r, "+OK");
    assert!(stat.starts_with("+OK 1 "), "{stat}");
}

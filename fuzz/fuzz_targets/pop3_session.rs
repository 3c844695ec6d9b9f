//! Feeds arbitrary bytes to a POP3 session over a fixed maildrop, in chunks whose size
//! the first input byte picks; the second picks plain or TLS.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_protocol::testing;
use understudy_protocol::Action;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let chunk = usize::from(data[0]).max(1);
    let messages = vec![
        b"From: a@example.com\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n".to_vec(),
        b"Subject: caf\xc3\xa9\r\n\r\nna\xefve\r\n\xff\xfe\0\r\nno final newline".to_vec(),
    ];
    let mut session = testing::pop3_session(data[1] & 1 == 1, messages);
    session.greeting();
    for piece in data[2..].chunks(chunk) {
        let mut out = session.receive(piece);
        while out.action != Action::Close && session.has_pending_commands() {
            out = session.receive(&[]);
        }
        match out.action {
            Action::Close => return,
            Action::StartTls => session.tls_started(),
            _ => {}
        }
    }
    session.close();
});

//! Feeds arbitrary bytes to an SMTP session (MX or submission, plain or TLS, and through
//! `receive` or, as the driver does, `receive_inline` then `receive(&[])` for what it
//! deferred: the second input byte) in chunks whose size the first byte picks. Inline,
//! a blocking backend call is a crash (`testing::receive_inline_checked`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_protocol::smtp::SmtpMode;
use understudy_protocol::testing;
use understudy_protocol::Action;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let chunk = usize::from(data[0]).max(1);
    let mode = if data[1] & 1 == 0 {
        SmtpMode::Mx
    } else {
        SmtpMode::Submission
    };
    let mut session = testing::smtp_session(mode, data[1] & 2 == 2);
    let inline = data[1] & 4 == 4;
    session.greeting();
    for piece in data[2..].chunks(chunk) {
        let mut action = if inline {
            testing::receive_inline_checked(&mut session, piece).action
        } else {
            session.receive(piece).action
        };
        while inline && action == Action::Continue && session.has_deferred() {
            action = session.receive(&[]).action;
        }
        match action {
            Action::Close => return,
            Action::StartTls => session.tls_started(),
            _ => {}
        }
    }
});

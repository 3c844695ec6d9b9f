//! Feeds arbitrary bytes to an SMTP session (MX or submission, plain or TLS: the second
//! input byte) in chunks whose size the first byte picks.
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
    session.greeting();
    for piece in data[2..].chunks(chunk) {
        match session.receive(piece).action {
            Action::Close => return,
            Action::StartTls => session.tls_started(),
            _ => {}
        }
    }
});

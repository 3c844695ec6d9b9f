//! COMPRESS DEFLATE (RFC 4978): the session says `OK` and hands the connection to the
//! driver's DEFLATE (`Action::Compress`); offered after login only, once per connection.

use super::*;

impl ImapSession {
    pub(super) fn compress(&mut self, tag: &str, out: &mut Vec<u8>) -> Flow {
        if self.compressing {
            return no(out, tag, "[COMPRESSIONACTIVE] DEFLATE active already");
        }
        // imap-codec knows only DEFLATE; anything else did not parse.
        self.compressing = true;
        ok(out, tag, "DEFLATE active");
        Flow::Compress
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{info, logged_in, send, session_with};
    use crate::session::Action;
    use crate::testing::imap::MockStore;

    #[test]
    fn compress_is_offered_after_login_once_and_hands_over_to_the_driver() {
        let store = MockStore::new();
        let mut before = session_with(&store, info(true, false));
        assert_eq!(
            send(&mut before, "a COMPRESS DEFLATE\r\n"),
            "a BAD Command not valid before login\r\n"
        );
        let mut s = logged_in(&store);
        assert!(send(&mut s, "c CAPABILITY\r\n").contains(" COMPRESS=DEFLATE "));
        let out = s.receive(b"z COMPRESS DEFLATE\r\n");
        assert_eq!(out.bytes, b"z OK DEFLATE active\r\n");
        assert_eq!(out.action, Action::Compress);
        // From here the driver inflates; the session sees plain commands again.
        assert_eq!(
            send(&mut s, "y COMPRESS DEFLATE\r\n"),
            "y NO [COMPRESSIONACTIVE] DEFLATE active already\r\n"
        );
        assert!(!send(&mut s, "c CAPABILITY\r\n").contains("COMPRESS"));
        assert_eq!(
            send(&mut s, "x COMPRESS GZIP\r\n"),
            "x BAD Invalid or unknown command\r\n"
        );
    }
}

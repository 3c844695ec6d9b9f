//! BINARY (RFC 3516) byte-exact: FETCH BINARY[..], BINARY.PEEK, BINARY.SIZE with the
//! transfer encoding undone, literal8 where NUL is in the data, UNKNOWN-CTE, and an
//! APPEND of a literal8.

use super::tests::{selected, send};
use crate::testing::imap::MockStore;

const MIXED: &str = "From: a@example.org\r\nSubject: bin\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=x\r\n\r\n\
--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
caf=C3=A9\r\n\
--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
AGhpAA==\r\n\
--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-foo\r\n\r\nzzz\r\n\
--x--\r\n";

#[test]
fn binary_sections_are_decoded_and_sized() {
    let store = MockStore::new();
    store.deliver("INBOX", MIXED, 0);
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[2])\r\n"),
        "* 1 FETCH (BINARY[1] {5}\r\ncafé BINARY.SIZE[2] 4)\r\na OK FETCH completed\r\n"
    );
    // NUL in the data: a literal8.
    assert_eq!(
        send(&mut s, "b FETCH 1 BINARY.PEEK[2]\r\n"),
        "* 1 FETCH (BINARY[2] ~{4}\r\n\0hi\0)\r\nb OK FETCH completed\r\n"
    );
    // <partial> of the decoded octets, the origin echoed.
    assert_eq!(
        send(&mut s, "c UID FETCH 1 (BINARY.PEEK[2]<1.2>)\r\n"),
        "* 1 FETCH (UID 1 BINARY[2]<1> {2}\r\nhi)\r\nc OK UID FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d FETCH 1 (FLAGS BINARY.PEEK[3])\r\n"),
        "d NO [UNKNOWN-CTE] Cannot decode a part's transfer encoding\r\n"
    );
    // Without .PEEK, \Seen is set and shown.
    assert_eq!(
        send(&mut s, "e FETCH 1 (BINARY[1] FLAGS)\r\n"),
        "* 1 FETCH (BINARY[1] {5}\r\ncafé FLAGS (\\Seen \\Recent))\r\ne OK FETCH completed\r\n"
    );
    // A part that does not exist is empty, as with BODY[].
    assert_eq!(
        send(&mut s, "f FETCH 1 BINARY.SIZE[7]\r\n"),
        "* 1 FETCH (BINARY.SIZE[7] 0)\r\nf OK FETCH completed\r\n"
    );
}

#[test]
fn an_appended_literal8_comes_back_whole_from_binary() {
    let store = MockStore::new();
    let mut s = selected(&store);
    let message = "Subject: nul\r\n\r\na\0b\r\n";
    assert_eq!(
        send(
            &mut s,
            &format!("a APPEND INBOX ~{{{}+}}\r\n{message}\r\n", message.len())
        ),
        "* 1 EXISTS\r\n* 1 RECENT\r\na OK [APPENDUID 1001 1] APPEND completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b FETCH 1 (BINARY.PEEK[] BINARY.SIZE[1])\r\n"),
        format!(
            "* 1 FETCH (BINARY[] ~{{{}}}\r\n{message} BINARY.SIZE[1] 5)\r\nb OK FETCH completed\r\n",
            message.len()
        )
    );
}

//! The `Received` trace header (RFC 5321 §4.4) added to every accepted message, with the
//! protocol names of RFC 3848 and RFC 6531 §3.7.3 and an RFC 5322 §3.3 date.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use time::OffsetDateTime;

/// What the header records about one transaction.
pub(super) struct Trace<'a> {
    pub helo: &'a str,
    pub peer: IpAddr,
    pub hostname: &'a str,
    pub protocol: &'static str,
    pub id: &'a str,
    /// Set only when the message has exactly one recipient, so a multi-recipient
    /// message does not disclose its other recipients.
    pub rcpt: Option<&'a str>,
    pub date: OffsetDateTime,
}

/// `with` keyword for the transaction (RFC 3848, and RFC 6531 for SMTPUTF8).
pub(super) fn protocol_name(extended: bool, tls: bool, auth: bool, smtputf8: bool) -> &'static str {
    match (extended, smtputf8, tls, auth) {
        (false, _, _, _) => "SMTP",
        (true, false, false, false) => "ESMTP",
        (true, false, true, false) => "ESMTPS",
        (true, false, false, true) => "ESMTPA",
        (true, false, true, true) => "ESMTPSA",
        (true, true, false, false) => "UTF8SMTP",
        (true, true, true, false) => "UTF8SMTPS",
        (true, true, false, true) => "UTF8SMTPA",
        (true, true, true, true) => "UTF8SMTPSA",
    }
}

/// A short id naming this transaction in our logs and trace header; unique enough for
/// tracing (seconds plus a process-wide counter), not a store key.
pub(super) fn trace_id(now: OffsetDateTime) -> String {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    // Truncation is intended: the low 32 bits of the time change every second.
    format!("{:08X}{:06X}", now.unix_timestamp() as u32, seq & 0x00FF_FFFF)
}

pub(super) fn received_header(t: &Trace<'_>) -> String {
    let peer = match t.peer {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    let mut header = format!(
        "Received: from {} ({peer})\r\n\tby {} with {} id {}",
        sanitize(t.helo),
        sanitize(t.hostname),
        t.protocol,
        t.id
    );
    if let Some(rcpt) = t.rcpt {
        header.push_str("\r\n\tfor <");
        header.push_str(&sanitize_address(rcpt));
        header.push('>');
    }
    header.push_str(";\r\n\t");
    header.push_str(&rfc5322_date(t.date));
    header.push_str("\r\n");
    header
}

/// `Tue, 1 Jul 2025 10:00:00 +0000`.
pub(super) fn rfc5322_date(date: OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = DAYS
        .get(usize::from(date.weekday().number_days_from_monday()))
        .copied()
        .unwrap_or("Mon");
    let month = MONTHS
        .get(usize::from(u8::from(date.month())).saturating_sub(1))
        .copied()
        .unwrap_or("Jan");
    let offset = date.offset();
    let sign = if offset.is_negative() { '-' } else { '+' };
    format!(
        "{day}, {} {month} {} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        date.day(),
        date.year(),
        date.hour(),
        date.minute(),
        date.second(),
        offset.whole_hours().unsigned_abs(),
        offset.minutes_past_hour().unsigned_abs()
    )
}

/// HELO arguments are client-chosen: keep header syntax intact (no comment delimiters,
/// no controls, no non-ASCII in a trace field).
fn sanitize(text: &str) -> String {
    text.chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '(' | ')' | '\\' | ';') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Addresses may be UTF-8 under SMTPUTF8 (RFC 6532 allows it in headers); only controls
/// and the brackets that would end the field are replaced.
fn sanitize_address(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn known_answer() {
        let header = received_header(&Trace {
            helo: "client.example.org",
            peer: "192.0.2.7".parse().unwrap(),
            hostname: "mx.example.com",
            protocol: protocol_name(true, true, false, false),
            id: "ABC",
            rcpt: Some("bob@example.com"),
            date: datetime!(2025-07-01 09:05:03 UTC),
        });
        assert_eq!(
            header,
            "Received: from client.example.org ([192.0.2.7])\r\n\tby mx.example.com with ESMTPS \
             id ABC\r\n\tfor <bob@example.com>;\r\n\tTue, 1 Jul 2025 09:05:03 +0000\r\n"
        );
    }

    #[test]
    fn ipv6_no_rcpt_and_hostile_helo() {
        let header = received_header(&Trace {
            helo: "a(b)\u{e9}",
            peer: "2001:db8::1".parse().unwrap(),
            hostname: "mx",
            protocol: protocol_name(false, false, false, false),
            id: "1",
            rcpt: None,
            date: datetime!(1999-12-31 23:59:59 -05:30),
        });
        assert_eq!(
            header,
            "Received: from a?b?? ([IPv6:2001:db8::1])\r\n\tby mx with SMTP id 1;\r\n\t\
             Fri, 31 Dec 1999 23:59:59 -0530\r\n"
        );
    }

    #[test]
    fn protocol_names() {
        assert_eq!(protocol_name(true, true, true, false), "ESMTPSA");
        assert_eq!(protocol_name(true, false, true, true), "UTF8SMTPA");
    }
}

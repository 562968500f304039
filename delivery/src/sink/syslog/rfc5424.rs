//! RFC 5424 messages whose MSG is a record's canonical JSON line:
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`.
//!
//! Pure: no I/O. A header field the record cannot fill validly becomes the
//! NILVALUE `-`; MSG is always the line, byte for byte (MSG-ANY, no BOM:
//! the line is UTF-8 JSON and collectors store it verbatim either way).

use std::io::Write as _;

use serde::Deserialize;

use super::fields::Fields;

/// Syslog facility (RFC 5424 section 6.2.1), as named in the config.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    /// 0: kernel messages.
    Kern,
    /// 1: user-level messages.
    User,
    /// 2: mail system.
    Mail,
    /// 3: system daemons.
    Daemon,
    /// 4: security/authorization messages.
    Auth,
    /// 5: messages generated internally by syslogd.
    Syslog,
    /// 6: line printer subsystem.
    Lpr,
    /// 7: network news subsystem.
    News,
    /// 8: UUCP subsystem.
    Uucp,
    /// 9: clock daemon.
    Cron,
    /// 10: security/authorization messages (private).
    Authpriv,
    /// 11: FTP daemon.
    Ftp,
    /// 12: NTP subsystem.
    Ntp,
    /// 13: log audit.
    Audit,
    /// 14: log alert.
    Alert,
    /// 15: clock daemon (second).
    Clock,
    /// 16: local use 0.
    #[default]
    Local0,
    /// 17: local use 1.
    Local1,
    /// 18: local use 2.
    Local2,
    /// 19: local use 3.
    Local3,
    /// 20: local use 4.
    Local4,
    /// 21: local use 5.
    Local5,
    /// 22: local use 6.
    Local6,
    /// 23: local use 7.
    Local7,
}

impl Facility {
    /// The numeric code, 0..=23.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// RFC 5424 severity 4: gap records and alerts.
const WARNING: u8 = 4;
/// RFC 5424 severity 6: every other record.
const INFORMATIONAL: u8 = 6;
/// RFC 5424's NILVALUE.
const NIL: &[u8] = b"-";

/// Field limits of RFC 5424's ABNF, in octets.
const HOSTNAME_MAX: usize = 255;
/// APP-NAME.
pub const APP_NAME_MAX: usize = 48;
/// PROCID.
const PROCID_MAX: usize = 128;
/// MSGID.
const MSGID_MAX: usize = 32;

/// The parts of the header fixed for one sink: facility, APP-NAME, PROCID.
#[derive(Clone, Debug)]
pub struct Header {
    facility: u8,
    app_name: String,
    procid: String,
}

impl Header {
    /// `app_name` must be 1..=48 printable US-ASCII characters (see
    /// [`valid_field`]); `procid` is the agent's pid, or `None` for `-`.
    pub fn new(facility: Facility, app_name: &str, procid: Option<u32>) -> Option<Self> {
        valid_field(app_name.as_bytes(), APP_NAME_MAX).then(|| Self {
            facility: facility.code(),
            app_name: app_name.to_owned(),
            procid: procid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        })
    }

    /// Appends the header for `line` up to and including the space before
    /// MSG. The message is this header followed by `line`.
    pub fn write(&self, line: &[u8], out: &mut Vec<u8>) {
        let fields = Fields::parse(line);
        let warning =
            fields.action.as_deref() == Some("gap") || fields.kind.as_deref() == Some("alert");
        let severity = if warning { WARNING } else { INFORMATIONAL };
        let pri = u16::from(self.facility) * 8 + u16::from(severity);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "<{pri}>1 ");
        match fields.timestamp.as_deref().and_then(timestamp) {
            Some((head, fraction, offset)) => {
                out.extend_from_slice(head);
                if !fraction.is_empty() {
                    out.push(b'.');
                    out.extend_from_slice(fraction);
                }
                out.extend_from_slice(offset);
            }
            None => out.extend_from_slice(NIL),
        }
        out.push(b' ');
        out.extend_from_slice(or_nil(fields.hostname.as_deref(), HOSTNAME_MAX));
        out.push(b' ');
        out.extend_from_slice(self.app_name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(or_nil(Some(&self.procid), PROCID_MAX));
        out.push(b' ');
        out.extend_from_slice(or_nil(fields.action.as_deref(), MSGID_MAX));
        // STRUCTURED-DATA: an SD-ID of our own would need an IANA private
        // enterprise number (`name@PEN`), which lbwitness does not hold, and
        // everything is in MSG anyway.
        out.extend_from_slice(b" - ");
    }
}

/// Whether `value` is a valid RFC 5424 header field: 1..=max octets of
/// PRINTUSASCII (33..=126), so no space, no control and no non-ASCII.
pub fn valid_field(value: &[u8], max: usize) -> bool {
    (1..=max).contains(&value.len()) && value.iter().all(|b| (33..=126).contains(b))
}

fn or_nil(value: Option<&str>, max: usize) -> &[u8] {
    match value {
        Some(v) if valid_field(v.as_bytes(), max) => v.as_bytes(),
        _ => NIL,
    }
}

/// Splits an RFC 3339 timestamp into RFC 5424's TIMESTAMP parts:
/// `YYYY-MM-DDThh:mm:ss`, at most 6 fraction digits (truncated: rounding
/// could carry into the next second, minute, ... year), and the offset
/// (`Z` or `+hh:mm`). `None` when it is not a valid RFC 5424 time (a leap
/// second `60` is not).
fn timestamp(ts: &str) -> Option<(&[u8], &[u8], &[u8])> {
    let b = ts.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if punctuation.iter().any(|&(i, c)| b[i] != c)
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut fraction: &[u8] = &[];
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let digits = after_dot.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        fraction = &after_dot[..digits.min(6)];
        rest = &after_dot[digits..];
    }
    let offset_ok = match rest {
        b"Z" => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<u32> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            };
            matches!((two(*h1, *h2), two(*m1, *m2)), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    };
    offset_ok.then_some((&b[..19], fraction, rest))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
#[path = "rfc5424_tests.rs"]
mod tests;

//! The formatter against RFC 5424's ABNF (section 6), checked by a small
//! independent parser of that grammar.

use proptest::prelude::*;

use super::*;

/// The parts of a message, split per the ABNF; panics naming the rule that
/// does not hold.
struct Parsed<'a> {
    pri: u16,
    timestamp: &'a str,
    hostname: &'a str,
    app_name: &'a str,
    procid: &'a str,
    msgid: &'a str,
    msg: &'a [u8],
}

fn parse(message: &[u8]) -> Parsed<'_> {
    let close = message
        .iter()
        .position(|&b| b == b'>')
        .expect("PRI has a '>'");
    assert_eq!(message[0], b'<', "PRI starts with '<'");
    let prival = std::str::from_utf8(&message[1..close]).unwrap();
    assert!((1..=3).contains(&prival.len()), "PRIVAL is 1*3DIGIT");
    assert!(
        prival == "0" || !prival.starts_with('0'),
        "PRIVAL has no leading zero"
    );
    let pri: u16 = prival.parse().expect("PRIVAL is digits");
    assert!(pri <= 191, "PRIVAL is 0..191");
    let rest = &message[close + 1..];
    assert!(rest.starts_with(b"1 "), "VERSION is 1, then SP");
    let mut parts = rest[2..].splitn(7, |&b| b == b' ');
    let mut field = |max: usize, rule: &str| -> &str {
        let f = parts.next().unwrap_or_else(|| panic!("{rule} missing"));
        assert!(
            f == b"-" || valid_field(f, max),
            "{rule} is NILVALUE or 1*{max}PRINTUSASCII: {f:?}"
        );
        std::str::from_utf8(f).unwrap()
    };
    let timestamp = field(64, "TIMESTAMP");
    let hostname = field(HOSTNAME_MAX, "HOSTNAME");
    let app_name = field(APP_NAME_MAX, "APP-NAME");
    let procid = field(PROCID_MAX, "PROCID");
    let msgid = field(MSGID_MAX, "MSGID");
    assert_eq!(parts.next(), Some(&b"-"[..]), "SD is NILVALUE");
    let msg = parts.next().expect("SP MSG");
    if timestamp != "-" {
        check_timestamp(timestamp);
    }
    Parsed {
        pri,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        msg,
    }
}

/// FULL-DATE "T" FULL-TIME with TIME-SECFRAC = "." 1*6DIGIT.
fn check_timestamp(ts: &str) {
    let (date, time) = ts.split_once('T').expect("'T' between date and time");
    assert_eq!(date.len(), 10, "FULL-DATE is 4-2-2 digits: {ts}");
    let offset_at = time.find(['Z', '+', '-']).expect("TIME-OFFSET");
    let (partial, offset) = time.split_at(offset_at);
    assert!(offset == "Z" || offset.len() == 6, "TIME-OFFSET: {ts}");
    let (hms, frac) = partial.split_once('.').unwrap_or((partial, ""));
    assert_eq!(hms.len(), 8, "hh:mm:ss: {ts}");
    assert!(
        hms[6..].parse::<u8>().unwrap() <= 59,
        "TIME-SECOND has no 60"
    );
    if partial.contains('.') {
        assert!(
            (1..=6).contains(&frac.len()),
            "TIME-SECFRAC is 1*6DIGIT: {ts}"
        );
        assert!(frac.bytes().all(|b| b.is_ascii_digit()));
    }
}

fn line(timestamp: &str, action: &str, kind: &str, hostname: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "@timestamp": timestamp,
        "agent": {"id": "0f0e"},
        "event": {"action": action, "kind": kind, "sequence": 42},
        "observer": {"hostname": hostname},
    }))
    .unwrap()
}

fn format(header: &Header, line: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    header.write(line, &mut out);
    out.extend_from_slice(line);
    out
}

fn header() -> Header {
    Header::new(Facility::Local0, "lbwitness", Some(4242)).unwrap()
}

#[test]
fn a_flow_record() {
    let l = line("2026-03-01T12:34:56.987654321Z", "flow", "event", "lb1");
    let out = format(&header(), &l);
    let expected = b"<134>1 2026-03-01T12:34:56.987654Z lb1 lbwitness 4242 flow - ";
    assert_eq!(&out[..expected.len()], expected);
    let p = parse(&out);
    assert_eq!(p.msg, &l[..], "MSG is the line, byte for byte");
}

#[test]
fn fractions_are_truncated_never_rounded() {
    let ts = |t: &str| {
        let out = format(&header(), &line(t, "flow", "event", "h"));
        parse(&out).timestamp.to_owned()
    };
    assert_eq!(
        ts("2026-12-31T23:59:59.999999999Z"),
        "2026-12-31T23:59:59.999999Z"
    );
    assert_eq!(ts("2026-12-31T23:59:59.1Z"), "2026-12-31T23:59:59.1Z");
    assert_eq!(ts("2026-12-31T23:59:59Z"), "2026-12-31T23:59:59Z");
    assert_eq!(
        ts("2026-12-31T23:59:59.000000000Z"),
        "2026-12-31T23:59:59.000000Z"
    );
    assert_eq!(
        ts("2024-02-29T01:02:03.5+05:30"),
        "2024-02-29T01:02:03.5+05:30"
    );
    assert_eq!(ts("2024-02-29T01:02:03-00:00"), "2024-02-29T01:02:03-00:00");
}

#[test]
fn invalid_times_become_nil() {
    for bad in [
        "",
        "yesterday",
        "2026-12-31T23:59:60Z", // leap second: RFC 5424 forbids 60
        "2025-02-29T00:00:00Z", // not a leap year
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01 00:00:00Z", // RFC 5424 wants 'T'
        "2026-01-01t00:00:00z",
        "2026-01-01T00:00:00",   // no offset
        "2026-01-01T00:00:00.Z", // empty fraction
        "2026-01-01T00:00:00Zjunk",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00+0100",
        "２026-01-01T00:00:00Z",
    ] {
        let out = format(&header(), &line(bad, "flow", "event", "h"));
        assert_eq!(parse(&out).timestamp, "-", "{bad:?}");
    }
}

#[test]
fn header_fields_that_break_the_grammar_become_nil() {
    let long_host = "h".repeat(256);
    let ok_host = "h".repeat(255);
    let long_action = "a".repeat(33);
    let ok_action = "a".repeat(32);
    let cases = [
        ("lb 1", "flow", "-", "flow"),
        ("lb1", "tcp syn", "lb1", "-"),
        ("lbé", "flöw", "-", "-"),
        ("", "", "-", "-"),
        ("lb\u{7f}", "a\tb", "-", "-"),
        (long_host.as_str(), long_action.as_str(), "-", "-"),
        (
            ok_host.as_str(),
            ok_action.as_str(),
            ok_host.as_str(),
            ok_action.as_str(),
        ),
    ];
    for (host, action, want_host, want_msgid) in cases {
        let out = format(
            &header(),
            &line("2026-01-01T00:00:00Z", action, "event", host),
        );
        let p = parse(&out);
        assert_eq!(
            (p.hostname, p.msgid),
            (want_host, want_msgid),
            "{host:?} {action:?}"
        );
    }
}

#[test]
fn severity_is_warning_for_gaps_and_alerts() {
    let pri = |action: &str, kind: &str, facility: Facility| {
        let h = Header::new(facility, "lbwitness", None).unwrap();
        parse(&format(
            &h,
            &line("2026-01-01T00:00:00Z", action, kind, "h"),
        ))
        .pri
    };
    assert_eq!(pri("flow", "event", Facility::Local0), 16 * 8 + 6);
    assert_eq!(pri("gap", "event", Facility::Local0), 16 * 8 + 4);
    assert_eq!(pri("flow", "alert", Facility::Local0), 16 * 8 + 4);
    assert_eq!(pri("flow", "event", Facility::Kern), 6);
    assert_eq!(
        pri("gap", "event", Facility::Kern),
        4,
        "PRI 4 is written without padding"
    );
    assert_eq!(pri("flow", "event", Facility::Local7), 23 * 8 + 6);
    assert_eq!(pri("gap", "event", Facility::Local7), 188);
}

#[test]
fn no_procid_and_unreadable_lines_give_nil_fields() {
    let h = Header::new(Facility::Local0, "lbw", None).unwrap();
    let out = format(&h, b"not json at all");
    let p = parse(&out);
    assert_eq!(
        (p.timestamp, p.hostname, p.app_name, p.procid, p.msgid),
        ("-", "-", "lbw", "-", "-")
    );
    assert_eq!(p.msg, b"not json at all");
}

#[test]
fn app_name_is_checked() {
    assert!(Header::new(Facility::Local0, "", None).is_none());
    assert!(Header::new(Facility::Local0, "lb witness", None).is_none());
    assert!(Header::new(Facility::Local0, &"a".repeat(49), None).is_none());
    assert!(Header::new(Facility::Local0, &"a".repeat(48), None).is_some());
}

#[test]
fn facility_codes_follow_the_rfc() {
    let parsed: Facility = serde_json::from_str("\"authpriv\"").unwrap();
    assert_eq!(parsed.code(), 10);
    assert_eq!(Facility::default(), Facility::Local0);
    assert_eq!(Facility::Local0.code(), 16);
    assert_eq!(Facility::Local7.code(), 23);
}

proptest! {
    /// Whatever the record holds, the message obeys the grammar and MSG is
    /// the line.
    #[test]
    fn any_record_gives_a_valid_message(
        ts in prop_oneof![
            "\\PC{0,40}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        ],
        action in "\\PC{0,40}",
        kind in "alert|event|\\PC{0,8}",
        host in "\\PC{0,300}",
    ) {
        let l = line(&ts, &action, &kind, &host);
        let out = format(&header(), &l);
        let p = parse(&out);
        prop_assert_eq!(p.msg, &l[..]);
        prop_assert!(p.timestamp == "-" || ts.starts_with(&p.timestamp[..19]));
    }
}

use proptest::prelude::*;

use super::*;

/// Parses everything in `bytes`, fed in one piece.
fn all(bytes: &[u8]) -> Result<Vec<ServerOp>, ParseError> {
    let mut buf = BytesMut::from(bytes);
    let mut ops = Vec::new();
    while let Some(op) = next_op(&mut buf)? {
        ops.push(op);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(ops)
}

fn msg(subject: &str, reply: Option<&str>, headers: Option<&[u8]>, payload: &[u8]) -> ServerOp {
    ServerOp::Msg(Message {
        subject: subject.into(),
        sid: "1".into(),
        reply: reply.map(Into::into),
        headers: headers.map(Bytes::copy_from_slice),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Writes `op` the way nats-server does.
fn encode(op: &ServerOp, out: &mut Vec<u8>) {
    match op {
        ServerOp::Info(json) => {
            out.extend(b"INFO ");
            out.extend(json.as_ref());
            out.extend(b" \r\n");
        }
        ServerOp::Ping => out.extend(b"PING\r\n"),
        ServerOp::Pong => out.extend(b"PONG\r\n"),
        ServerOp::Ok => out.extend(b"+OK\r\n"),
        ServerOp::Err(text) => out.extend(format!("-ERR '{text}'\r\n").as_bytes()),
        ServerOp::Msg(m) => {
            let reply = m
                .reply
                .as_deref()
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            let total = m.headers.as_ref().map_or(0, Bytes::len) + m.payload.len();
            let line = match &m.headers {
                Some(h) => format!(
                    "HMSG {} {}{reply} {} {total}\r\n",
                    m.subject,
                    m.sid,
                    h.len()
                ),
                None => format!("MSG {} {}{reply}  {total}\r\n", m.subject, m.sid),
            };
            out.extend(line.as_bytes());
            out.extend(m.headers.as_deref().unwrap_or_default());
            out.extend(m.payload.as_ref());
            out.extend(b"\r\n");
        }
    }
}

#[test]
fn what_nats_server_2_9_sends() {
    let wire = b"INFO {\"server_id\":\"N\",\"headers\":true} \r\n\
        PONG\r\n\
        HMSG _INBOX.x.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
        MSG _INBOX.x.2 1  23\r\n{\"stream\":\"S\", \"seq\":1}\r\n\
        ping\r\n+OK\r\n\
        -ERR 'Authorization Violation'\r\n";
    assert_eq!(
        all(wire).unwrap(),
        vec![
            ServerOp::Info(Bytes::from_static(
                b"{\"server_id\":\"N\",\"headers\":true}"
            )),
            ServerOp::Pong,
            msg("_INBOX.x.1", None, Some(b"NATS/1.0 503\r\n\r\n"), b""),
            msg("_INBOX.x.2", None, None, b"{\"stream\":\"S\", \"seq\":1}"),
            ServerOp::Ping,
            ServerOp::Ok,
            ServerOp::Err("Authorization Violation".into()),
        ]
    );
}

#[test]
fn messages_with_reply_subjects_and_binary_payloads() {
    let wire = b"MSG a.b 7 r.1 4\r\n\r\n\0\xff\r\nHMSG a 1\tr 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";
    assert_eq!(
        all(wire).unwrap(),
        vec![
            ServerOp::Msg(Message {
                subject: "a.b".into(),
                sid: "7".into(),
                reply: Some("r.1".into()),
                headers: None,
                payload: Bytes::from_static(b"\r\n\0\xff"),
            }),
            msg("a", Some("r"), Some(b"NATS/1.0\r\n\r\n"), b"hi"),
        ]
    );
}

#[test]
fn incomplete_input_waits() {
    for partial in [
        &b"PIN"[..],
        b"PING",
        b"PING\r",
        b"MSG a 1 5\r\nab",
        b"MSG a 1 5\r\nabcde\r",
    ] {
        let mut buf = BytesMut::from(partial);
        assert_eq!(next_op(&mut buf), Ok(None), "{partial:?}");
        assert_eq!(&buf[..], partial, "nothing consumed");
    }
}

#[test]
fn garbage_is_refused_with_its_text() {
    for (wire, want) in [
        (
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            "unexpected `HTTP/1.1 400 Bad Request`",
        ),
        (b"SSH-2.0-OpenSSH_9.2 ", "unexpected `SSH-2.0-OpenSSH_9.2 `"),
        (b"\x16\x03\x01\x02\x00\x01 ", "unexpected"),
        (b"PING x\r\n", "malformed PING"),
        (b"MSG a 1\r\n", "malformed MSG"),
        (b"MSG a 1 b c 5\r\n", "malformed MSG"),
        (b"MSG a 1 -5\r\n", "malformed MSG"),
        (b"HMSG a 1 9 5\r\n", "malformed HMSG"),
        (b"MSG a 1 2\r\nabcd", "malformed MSG"),
        (b"MSG a 1 99999999\r\n", "exceeds"),
        (b"MSG a 1 99999999999999999999999\r\n", "malformed MSG"),
    ] {
        let err = all(wire).expect_err(&String::from_utf8_lossy(wire));
        assert!(err.to_string().contains(want), "{wire:?}: {err}");
    }
    let long = vec![b'I'; MAX_LINE + 1];
    assert_eq!(all(&long), Err(ParseError::LineTooLong { limit: MAX_LINE }));
}

fn arb_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_$.>*-]{1,20}"
}

fn arb_op() -> impl Strategy<Value = ServerOp> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from);
    prop_oneof![
        "[ -~]{0,200}".prop_map(|s| ServerOp::Info(Bytes::from(s.trim().to_owned()))),
        Just(ServerOp::Ping),
        Just(ServerOp::Pong),
        Just(ServerOp::Ok),
        "[ -&(-~]{0,60}".prop_map(|s| ServerOp::Err(s.trim().to_owned())),
        (
            arb_token(),
            "[0-9]{1,5}",
            proptest::option::of(arb_token()),
            proptest::option::of(bytes()),
            bytes(),
        )
            .prop_map(|(subject, sid, reply, headers, payload)| {
                ServerOp::Msg(Message {
                    subject,
                    sid,
                    reply,
                    headers,
                    payload,
                })
            }),
    ]
}

proptest! {
    /// Whatever arrives, split however, the parser returns ops or an error,
    /// always makes progress, and never holds more than a line or message.
    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(0usize..2000, 0..8),
    ) {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut cuts = cuts;
        cuts.push(data.len());
        cuts.sort_unstable();
        'feed: for cut in cuts {
            let cut = cut.min(data.len());
            if cut > fed {
                buf.extend_from_slice(&data[fed..cut]);
                fed = cut;
            }
            loop {
                let before = buf.len();
                match next_op_within(&mut buf, 100, 500) {
                    Ok(Some(_)) => prop_assert!(buf.len() < before),
                    Ok(None) => {
                        prop_assert!(buf.len() <= 100 + 500 + 2 + 100);
                        break;
                    }
                    Err(_) => break 'feed,
                }
            }
        }
    }

    /// Valid ops come back unchanged however the bytes are split.
    #[test]
    fn ops_survive_any_chunking(
        ops in proptest::collection::vec(arb_op(), 0..20),
        chunk in 1usize..64,
    ) {
        let mut wire = Vec::new();
        for op in &ops {
            encode(op, &mut wire);
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(op) = next_op(&mut buf).unwrap() {
                got.push(op);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, ops);
    }
}

proptest! {
    /// Valid ops with one byte changed: errors or ops, never a panic, and
    /// nothing left unparsed beyond one incomplete operation.
    #[test]
    fn corrupted_ops_never_panic(
        ops in proptest::collection::vec(arb_op(), 1..10),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut wire = Vec::new();
        for op in &ops {
            encode(op, &mut wire);
        }
        let i = at.index(wire.len());
        wire[i] = byte;
        let mut buf = BytesMut::from(&wire[..]);
        while let Ok(Some(_)) = next_op(&mut buf) {}
        prop_assert!(buf.len() <= wire.len());
    }
}

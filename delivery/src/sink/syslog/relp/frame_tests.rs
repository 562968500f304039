use proptest::prelude::*;

use super::*;

const MAX: usize = 64 * 1024;

fn one(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    parse(bytes, MAX)
}

#[test]
fn parses_what_librelp_sends() {
    let open = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n\n";
    let (frame, used) = one(open).unwrap().unwrap();
    assert_eq!(
        (frame.txnr, frame.command, used),
        (1, &b"rsp"[..], open.len() - 1)
    );
    let rsp = Rsp::parse(frame.data).unwrap();
    assert_eq!((rsp.status, rsp.text), (Some(200), &b"OK"[..]));
    let offers: Vec<_> = offers(rsp.data).collect();
    assert_eq!(offers[0], (&b"relp_version"[..], &b"0"[..]));
    assert_eq!(offers[2], (&b"commands"[..], &b"syslog"[..]));

    let close = b"3 rsp 0\n0 serverclose 0\n";
    let (frame, used) = one(close).unwrap().unwrap();
    assert_eq!((frame.txnr, frame.data, used), (3, &b""[..], 8));
    assert_eq!(Rsp::parse(frame.data).unwrap().status, None);
    let (hint, _) = one(&close[used..]).unwrap().unwrap();
    assert_eq!((hint.txnr, hint.command), (0, &b"serverclose"[..]));
}

#[test]
fn encodes_with_and_without_data() {
    let mut out = Vec::new();
    encode(7, "syslog", &[b"<134>1 ", b"{}"], &mut out);
    encode(8, "close", &[], &mut out);
    assert_eq!(out, b"7 syslog 9 <134>1 {}\n8 close 0\n");
    let (frame, used) = one(&out).unwrap().unwrap();
    assert_eq!(
        (frame.txnr, frame.command, frame.data),
        (7, &b"syslog"[..], &b"<134>1 {}"[..])
    );
    let (frame, _) = one(&out[used..]).unwrap().unwrap();
    assert_eq!(
        (frame.txnr, frame.command, frame.data),
        (8, &b"close"[..], &b""[..])
    );
}

#[test]
fn garbage_fails_at_the_first_byte() {
    let err = one(b"HTTP/1.1 400 Bad Request\r\n").unwrap_err();
    assert!(err.to_string().contains("got \"H\""), "{err}");
    assert!(matches!(
        one(b"1 rsp 6 200 OK\r"),
        Err(FrameError::Unexpected { at: 14, .. })
    ));
    assert!(matches!(
        one(b"1 rsp 0 \n"),
        Err(FrameError::Unexpected { .. })
    ));
    assert!(matches!(one(b"1 r2p"), Err(FrameError::Unexpected { .. })));
    assert!(matches!(one(b"1  rsp"), Err(FrameError::Unexpected { .. })));
    assert!(matches!(
        one(b"1234567890"),
        Err(FrameError::TooLong { field: "TXNR", .. })
    ));
    assert!(matches!(
        one(&[b'a'; 40]),
        Err(FrameError::Unexpected { .. })
    ));
    let long_cmd = [&b"1 "[..], &[b'a'; 33]].concat();
    assert!(matches!(
        one(&long_cmd),
        Err(FrameError::TooLong {
            field: "COMMAND",
            ..
        })
    ));
    assert!(matches!(
        parse(b"1 rsp 70000 ", MAX),
        Err(FrameError::DataTooLong { len: 70000, .. })
    ));
}

#[test]
fn incomplete_input_waits() {
    for partial in [
        &b""[..],
        b"1",
        b"12 ",
        b"12 rs",
        b"12 rsp",
        b"12 rsp 6",
        b"12 rsp 6 200 OK",
    ] {
        assert_eq!(one(partial), Ok(None), "{partial:?}");
    }
}

#[test]
fn txnr_wraps_after_999999999() {
    assert_eq!(next_txnr(1), 2);
    assert_eq!(next_txnr(MAX_TXNR), 1);
    let mut out = Vec::new();
    encode(MAX_TXNR, "syslog", &[b"x"], &mut out);
    assert_eq!(one(&out).unwrap().unwrap().0.txnr, MAX_TXNR);
}

#[test]
fn rsp_data_forms() {
    assert_eq!(Rsp::parse(b"500 error").unwrap().status, Some(500));
    assert_eq!(Rsp::parse(b"500").unwrap().text, b"");
    assert!(Rsp::parse(b"OK").is_none());
    assert!(Rsp::parse(b"20").is_none());
    assert!(Rsp::parse(b"2000").is_none());
}

fn arb_frame() -> impl Strategy<Value = (u32, String, Vec<u8>)> {
    (
        0..=MAX_TXNR,
        "[a-zA-Z]{1,32}",
        prop::collection::vec(any::<u8>(), 0..300),
    )
}

proptest! {
    /// Arbitrary bytes never panic, and whatever a prefix says stays true:
    /// an error is final, a complete frame is the same frame.
    #[test]
    fn any_bytes_any_split(bytes in prop::collection::vec(any::<u8>(), 0..64), cut in 0usize..64) {
        let whole = parse(&bytes, 16);
        let cut = cut.min(bytes.len());
        match parse(&bytes[..cut], 16) {
            Err(_) => prop_assert!(whole.is_err()),
            Ok(Some(prefix)) => prop_assert_eq!(whole, Ok(Some(prefix))),
            Ok(None) => {}
        }
    }

    /// Frames encoded back to back come out the same, whatever the chunks
    /// the bytes arrive in.
    #[test]
    fn round_trip_incrementally(
        frames in prop::collection::vec(arb_frame(), 1..6),
        chunk in 1usize..50,
    ) {
        let mut wire = Vec::new();
        for (txnr, command, data) in &frames {
            encode(*txnr, command, &[data], &mut wire);
        }
        let mut received = Vec::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            received.extend_from_slice(piece);
            while let Some((frame, used)) = parse(&received, MAX).unwrap() {
                got.push((frame.txnr, String::from_utf8(frame.command.to_vec()).unwrap(), frame.data.to_vec()));
                received.drain(..used);
            }
        }
        prop_assert!(received.is_empty());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn rsp_and_offers_never_panic(data in prop::collection::vec(any::<u8>(), 0..100)) {
        if let Some(rsp) = Rsp::parse(&data) {
            let _ = offers(rsp.data).count();
        }
    }
}

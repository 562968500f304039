//! Decoding the request programs' ring-buffer items into owned events.
//! Pure: a short, unknown or inconsistent item is an error the caller
//! counts, never a panic and never a misread event.
//!
//! A data event is sent as its fixed part (`DataEvent::DATA_OFFSET` bytes)
//! followed by `captured` payload bytes, and its header's `len` says how
//! many; the ring rounds items up to 8 bytes, so an item may be longer than
//! `len` but never shorter. The other kinds are fixed-size.

use agent_common::{
    event::{EventHeader, EventKind},
    request::{DATA_MAX, DataEvent, SockCallEvent, SockStateEvent, SpliceEvent, TcpEvent},
};

pub use agent_common::request::{call, direction, syscall, tcp_kind, tcp_state, tls};

/// Bytes moved through a TCP socket by one syscall, with its payload prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// `bpf_ktime_get_ns()` at syscall exit.
    pub ktime_ns: u64,
    /// `bpf_ktime_get_ns()` at syscall entry.
    pub enter_ns: u64,
    /// Request events this CPU lost before this one.
    pub lost: u32,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// The syscall's fd.
    pub fd: i32,
    /// A [`direction`] value.
    pub direction: u8,
    /// A [`syscall`] value.
    pub syscall: u8,
    /// A [`tls`] value.
    pub tls: u8,
    /// The socket (`struct sock *`).
    pub sk: u64,
    /// Bytes moved (> 0): the exact count, whatever was captured.
    pub ret: i64,
    /// The first bytes moved (at most the capture limit).
    pub payload: Vec<u8>,
}

/// A decoded request event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReqEvent {
    /// Bytes through a socket.
    Data(Data),
    /// A TCP state change.
    State(SockStateEvent),
    /// An accept, connect or close.
    Call(SockCallEvent),
    /// A reset, retransmission or socket destruction.
    Tcp(TcpEvent),
    /// A splice between a socket and a pipe.
    Splice(SpliceEvent),
}

impl ReqEvent {
    /// Request events the CPU lost before this one.
    pub fn lost(&self) -> u32 {
        match self {
            Self::Data(d) => d.lost,
            Self::State(s) => s.lost,
            Self::Call(c) => c.lost,
            Self::Tcp(t) => t.lost,
            Self::Splice(s) => s.lost,
        }
    }

    /// Kernel time of the event (CLOCK_MONOTONIC, ns): what events from
    /// different CPUs are sorted by.
    pub fn ktime_ns(&self) -> u64 {
        match self {
            Self::Data(d) => d.ktime_ns,
            Self::State(s) => s.header.ktime_ns,
            Self::Call(c) => c.header.ktime_ns,
            Self::Tcp(t) => t.header.ktime_ns,
            Self::Splice(s) => s.header.ktime_ns,
        }
    }
}

/// Why a ring-buffer item was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReqDecodeError {
    /// Shorter than the header or than its own `len`.
    #[error("request event of {got} bytes is shorter than the {need} it needs")]
    Short {
        /// Bytes needed.
        need: usize,
        /// Bytes received.
        got: usize,
    },
    /// A kind this agent does not know, or a flow event on the request ring.
    #[error("unknown request event kind {0}: the kernel object is newer than this agent")]
    UnknownKind(u32),
    /// The header's length does not fit the kind.
    #[error("request event kind {kind:?} says {len} bytes, expected {expected}")]
    BadLength {
        /// The kind.
        kind: EventKind,
        /// The header's `len`.
        len: usize,
        /// What this build expects (for data: the fixed part plus `captured`).
        expected: usize,
    },
    /// A data event claims more payload than an event carries.
    #[error("data event claims {0} captured bytes, more than {DATA_MAX}")]
    Captured(u32),
}

/// Reads a plain-old-data `T` from the start of `buf`.
fn read<T: Copy>(buf: &[u8]) -> Result<T, ReqDecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(ReqDecodeError::Short {
            need: size_of::<T>(),
            got: buf.len(),
        });
    }
    // SAFETY: length checked; `T` is a `repr(C)` event of integers and byte
    // arrays, valid for any bytes; read_unaligned tolerates any alignment.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

fn fixed<T: Copy>(buf: &[u8], kind: EventKind, header: &EventHeader) -> Result<T, ReqDecodeError> {
    let expected = size_of::<T>();
    if header.len as usize != expected {
        return Err(ReqDecodeError::BadLength {
            kind,
            len: header.len as usize,
            expected,
        });
    }
    read::<T>(buf)
}

/// The fixed part of a [`DataEvent`], as laid out before `data`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DataHead {
    header: EventHeader,
    lost: u32,
    tgid: u32,
    tid: u32,
    fd: i32,
    direction: u8,
    syscall: u8,
    tls: u8,
    _pad: [u8; 5],
    sk: u64,
    ret: i64,
    enter_ns: u64,
    captured: u32,
    _pad2: u32,
}

const _: () = assert!(size_of::<DataHead>() == DataEvent::DATA_OFFSET);

fn data(buf: &[u8], header: &EventHeader) -> Result<Data, ReqDecodeError> {
    let head = read::<DataHead>(buf)?;
    if head.captured as usize > DATA_MAX {
        return Err(ReqDecodeError::Captured(head.captured));
    }
    let expected = DataEvent::DATA_OFFSET + head.captured as usize;
    if header.len as usize != expected {
        return Err(ReqDecodeError::BadLength {
            kind: EventKind::SockData,
            len: header.len as usize,
            expected,
        });
    }
    let payload = buf
        .get(DataEvent::DATA_OFFSET..expected)
        .ok_or(ReqDecodeError::Short {
            need: expected,
            got: buf.len(),
        })?;
    Ok(Data {
        ktime_ns: head.header.ktime_ns,
        enter_ns: head.enter_ns,
        lost: head.lost,
        tgid: head.tgid,
        tid: head.tid,
        fd: head.fd,
        direction: head.direction,
        syscall: head.syscall,
        tls: head.tls,
        sk: head.sk,
        ret: head.ret,
        payload: payload.to_vec(),
    })
}

/// Decodes one item of the request ring buffer.
pub fn decode(buf: &[u8]) -> Result<ReqEvent, ReqDecodeError> {
    let header = read::<EventHeader>(buf)?;
    let kind = EventKind::from_u32(header.kind).ok_or(ReqDecodeError::UnknownKind(header.kind))?;
    match kind {
        EventKind::SockData => data(buf, &header).map(ReqEvent::Data),
        EventKind::SockState => fixed(buf, kind, &header).map(ReqEvent::State),
        EventKind::SockCall => fixed(buf, kind, &header).map(ReqEvent::Call),
        EventKind::Tcp => fixed(buf, kind, &header).map(ReqEvent::Tcp),
        EventKind::Splice => fixed(buf, kind, &header).map(ReqEvent::Splice),
        EventKind::Flow => Err(ReqDecodeError::UnknownKind(header.kind)),
    }
}

#[cfg(test)]
mod tests {
    use agent_common::request::AF_INET;
    use proptest::prelude::*;

    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: the events are repr(C) without implicit padding.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn data_item(captured: u32, payload: &[u8], ring_pad: usize) -> Vec<u8> {
        let mut ev = DataEvent {
            header: EventHeader {
                kind: EventKind::SockData as u32,
                len: (DataEvent::DATA_OFFSET + captured as usize) as u32,
                ktime_ns: 2_000,
            },
            lost: 3,
            tgid: 100,
            tid: 101,
            fd: 7,
            direction: direction::RECV,
            syscall: syscall::RECVFROM,
            tls: 0,
            _pad: [0; 5],
            sk: 0xffff_8880_1234_5678,
            ret: 4096,
            enter_ns: 1_000,
            captured,
            _pad2: 0,
            data: [0; DATA_MAX],
        };
        ev.data[..payload.len()].copy_from_slice(payload);
        let mut out = bytes_of(&ev);
        out.truncate(DataEvent::DATA_OFFSET + captured as usize + ring_pad);
        out
    }

    #[test]
    fn decodes_a_data_event_with_its_payload_only() {
        let item = data_item(5, b"GET /", 3);
        let ReqEvent::Data(d) = decode(&item).unwrap() else {
            panic!("not data")
        };
        assert_eq!(d.payload, b"GET /");
        assert_eq!(
            (d.tgid, d.tid, d.fd, d.sk, d.ret),
            (100, 101, 7, 0xffff_8880_1234_5678, 4096)
        );
        assert_eq!((d.enter_ns, d.ktime_ns, d.lost), (1_000, 2_000, 3));
        assert_eq!(
            (d.direction, d.syscall),
            (direction::RECV, syscall::RECVFROM)
        );
        let empty = data_item(0, b"", 0);
        assert!(matches!(decode(&empty), Ok(ReqEvent::Data(d)) if d.payload.is_empty()));
    }

    #[test]
    fn rejects_data_events_that_do_not_add_up() {
        let mut item = data_item(5, b"GET /", 0);
        item.truncate(item.len() - 1);
        assert!(matches!(
            decode(&item),
            Err(ReqDecodeError::Short { need: 77, got: 76 })
        ));
        let mut item = data_item(5, b"GET /", 8);
        item[4..8].copy_from_slice(&80u32.to_ne_bytes());
        assert!(matches!(
            decode(&item),
            Err(ReqDecodeError::BadLength {
                len: 80,
                expected: 77,
                ..
            })
        ));
        let mut item = data_item(5, b"GET /", 0);
        item[64..68].copy_from_slice(&2000u32.to_ne_bytes());
        assert_eq!(decode(&item), Err(ReqDecodeError::Captured(2000)));
    }

    #[test]
    fn decodes_fixed_events_and_checks_their_length() {
        let ev = SockStateEvent {
            header: EventHeader {
                kind: EventKind::SockState as u32,
                len: size_of::<SockStateEvent>() as u32,
                ktime_ns: 9,
            },
            lost: 0,
            tgid: 1,
            tid: 2,
            _pad: 0,
            sk: 42,
            oldstate: tcp_state::SYN_SENT,
            newstate: tcp_state::ESTABLISHED,
            family: AF_INET,
            sport: 40000,
            dport: 80,
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let mut item = bytes_of(&ev);
        assert_eq!(decode(&item), Ok(ReqEvent::State(ev)));
        assert_eq!(decode(&item).map(|e| e.ktime_ns()), Ok(9));
        item.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(&item),
            Ok(ReqEvent::State(ev)),
            "ring padding is ignored"
        );
        item[4..8].copy_from_slice(&88u32.to_ne_bytes());
        assert!(matches!(
            decode(&item),
            Err(ReqDecodeError::BadLength { expected: 80, .. })
        ));
        let short = bytes_of(&ev)[..79].to_vec();
        assert!(matches!(decode(&short), Err(ReqDecodeError::Short { .. })));
    }

    #[test]
    fn decodes_a_splice_event() {
        let ev = SpliceEvent {
            header: EventHeader {
                kind: EventKind::Splice as u32,
                len: size_of::<SpliceEvent>() as u32,
                ktime_ns: 7,
            },
            lost: 1,
            tgid: 10,
            tid: 11,
            sock_fd: 12,
            pipe_fd: 13,
            direction: direction::SEND,
            _pad: [0; 3],
            sk: 99,
            ret: 4096,
            enter_ns: 5,
        };
        let item = bytes_of(&ev);
        assert_eq!(decode(&item), Ok(ReqEvent::Splice(ev)));
        assert_eq!(decode(&item).map(|e| (e.ktime_ns(), e.lost())), Ok((7, 1)));
        assert!(matches!(
            decode(&item[..63]),
            Err(ReqDecodeError::Short { .. })
        ));
    }

    #[test]
    fn rejects_unknown_and_flow_kinds_and_short_headers() {
        let mut item = data_item(0, b"", 0);
        item[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(decode(&item), Err(ReqDecodeError::UnknownKind(99)));
        item[..4].copy_from_slice(&(EventKind::Flow as u32).to_ne_bytes());
        assert_eq!(decode(&item), Err(ReqDecodeError::UnknownKind(1)));
        assert!(matches!(
            decode(&[0; 15]),
            Err(ReqDecodeError::Short { need: 16, got: 15 })
        ));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn never_panics_on_any_body_of_a_known_kind(
            kind in 1u32..=7,
            len in 0u32..2000,
            body in proptest::collection::vec(any::<u8>(), 0..1200),
        ) {
            let mut item = kind.to_ne_bytes().to_vec();
            item.extend_from_slice(&len.to_ne_bytes());
            item.extend_from_slice(&body);
            if let Ok(ReqEvent::Data(d)) = decode(&item) {
                prop_assert_eq!(DataEvent::DATA_OFFSET + d.payload.len(), len as usize);
            }
        }
    }
}

//! Ring-buffer bytes to typed events. Pure: a bad event is an error the
//! caller counts, never a panic and never a misread record.

use agent_common::{
    event::{EventHeader, EventKind},
    flow::FlowEvent,
};

/// A decoded kernel event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A flow lifecycle event.
    Flow(FlowEvent),
}

/// Why a ring-buffer record was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the common header.
    #[error("event of {len} bytes is shorter than its {}-byte header", size_of::<EventHeader>())]
    Short {
        /// Bytes received.
        len: usize,
    },
    /// A kind this agent does not know (a newer kernel object?).
    #[error("unknown event kind {kind}: the kernel object is newer than this agent")]
    UnknownKind {
        /// The raw kind.
        kind: u32,
    },
    /// The size does not match the kind.
    #[error("event kind {kind:?} has {got} bytes, expected {expected}")]
    BadLength {
        /// The kind.
        kind: EventKind,
        /// Its size in this build.
        expected: usize,
        /// Bytes received (or the header's own `len`).
        got: usize,
    },
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    if buf.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short { len: buf.len() });
    }
    // SAFETY: length checked above; `EventHeader` is plain old data and
    // `read_unaligned` tolerates any alignment.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    let kind =
        EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })?;
    match kind {
        EventKind::Flow => {
            let expected = size_of::<FlowEvent>();
            // The ring buffer rounds records up to 8 bytes, so the slice may
            // be longer than the event; the header's own length must match.
            if buf.len() < expected || header.len as usize != expected {
                return Err(DecodeError::BadLength {
                    kind,
                    expected,
                    got: buf.len().min(header.len as usize),
                });
            }
            // SAFETY: at least `expected` bytes, plain old data.
            let event: FlowEvent = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            Ok(Event::Flow(event))
        }
        // Request events travel on their own ring (requests::event decodes
        // them); on the flow ring one is as foreign as an unknown kind.
        EventKind::SockData
        | EventKind::SockState
        | EventKind::SockCall
        | EventKind::Tcp
        | EventKind::Splice => Err(DecodeError::UnknownKind { kind: header.kind }),
    }
}

#[cfg(test)]
mod tests {
    use agent_common::flow::{FlowKey, reason};

    use super::*;

    fn bytes_of(ev: &FlowEvent) -> Vec<u8> {
        // SAFETY: FlowEvent is repr(C) plain old data without implicit padding.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const FlowEvent).cast::<u8>(),
                size_of::<FlowEvent>(),
            )
        }
        .to_vec()
    }

    fn sample() -> FlowEvent {
        FlowEvent {
            header: EventHeader {
                kind: EventKind::Flow as u32,
                len: size_of::<FlowEvent>() as u32,
                ktime_ns: 42,
            },
            key: FlowKey {
                src_port: 1234,
                dst_port: 80,
                protocol: 6,
                ip_version: 4,
                ..FlowKey::default()
            },
            reasons: reason::NEW | reason::SYN,
            tcp_flags: 2,
            _pad: 0,
            ip_len: 60,
            _pad2: 0,
        }
    }

    #[test]
    fn round_trip() {
        let ev = sample();
        assert_eq!(decode(&bytes_of(&ev)), Ok(Event::Flow(ev)));
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = bytes_of(&sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn unknown_kind_and_bad_len_are_rejected() {
        let mut ev = sample();
        ev.header.kind = 999;
        assert_eq!(
            decode(&bytes_of(&ev)),
            Err(DecodeError::UnknownKind { kind: 999 })
        );
        let mut ev = sample();
        ev.header.len = 8;
        assert!(matches!(
            decode(&bytes_of(&ev)),
            Err(DecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn padded_record_is_accepted() {
        let mut bytes = bytes_of(&sample());
        bytes.extend_from_slice(&[0; 8]);
        assert!(decode(&bytes).is_ok());
    }
}

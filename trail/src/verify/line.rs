//! One NDJSON line → what the verifier needs from it. Pure: bytes in,
//! fields and the canonical body out.

use std::borrow::Cow;

use thiserror::Error;

use super::canonical::{self, hex32};
use crate::jcs::{self, JcsError, Value};

/// What a checkpoint signature is over, before the canonical record.
pub const CHECKPOINT_CONTEXT: &[u8] = b"lbwitness-checkpoint-v1\n";

/// The fields of one record line.
#[derive(Debug)]
pub struct Line<'a> {
    /// `agent.id`.
    pub agent_id: Cow<'a, str>,
    /// `event.sequence`.
    pub sequence: u64,
    /// `event.hash`, decoded.
    pub hash: [u8; 32],
    /// What the record is, for the trail's own records.
    pub kind: Kind,
}

/// The records the verifier looks into.
#[derive(Debug)]
pub enum Kind {
    /// Any other record.
    Plain,
    /// `event.action = "checkpoint"`; `Err` says what is malformed.
    Checkpoint(Result<Checkpoint, String>),
    /// `event.action = "gap"`; `Err` says what is malformed.
    Gap(Result<Gap, String>),
}

/// `lbwitness.checkpoint`, decoded.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// `first_sequence`.
    pub first: u64,
    /// `last_sequence`.
    pub last: u64,
    /// `count`.
    pub count: u64,
    /// `head_hash`.
    pub head_hash: [u8; 32],
    /// `key_id`.
    pub key_id: [u8; 32],
    /// `signature`.
    pub signature: [u8; 64],
    /// `final`.
    pub is_final: bool,
    /// `next_key`, announcing a rotation.
    pub next_key: Option<NextKey>,
    /// The signed bytes: [`CHECKPOINT_CONTEXT`] then the record without
    /// `event.hash` and `lbwitness.checkpoint.signature`, canonical.
    pub message: Vec<u8>,
}

/// `lbwitness.checkpoint.next_key`.
#[derive(Clone, Debug)]
pub struct NextKey {
    /// `key_id`.
    pub key_id: [u8; 32],
    /// `public_key`.
    pub public_key: [u8; 32],
}

/// `lbwitness.gap`, decoded.
#[derive(Clone, Debug)]
pub struct Gap {
    /// `reason`.
    pub reason: String,
    /// `source`.
    pub source: String,
    /// `count`.
    pub count: u64,
    /// `previous_run` and the declared range, for `reason = "restart"`.
    pub restart: Option<Restart>,
    /// `first_sequence..=last_sequence` of another gap (a spool loss):
    /// sequences that may be missing, of which `count` are.
    pub declared: Option<(u64, u64)>,
    /// `before_hash`: the chain hash of record `first_sequence - 1`.
    pub before_hash: Option<[u8; 32]>,
    /// `last_hash`: the chain hash of record `last_sequence`.
    pub last_hash: Option<[u8; 32]>,
}

/// What a restart gap record says about the previous run.
#[derive(Clone, Debug)]
pub struct Restart {
    /// `previous_run.clean`.
    pub clean: bool,
    /// `previous_run.last_sequence` (S).
    pub last_sequence: u64,
    /// `previous_run.last_hash`.
    pub last_hash: [u8; 32],
    /// `previous_run.durable_sequence` (D).
    pub durable_sequence: u64,
    /// `first_sequence..=last_sequence` (D+1..=S), possibly lost.
    pub declared: Option<(u64, u64)>,
}

/// Why a line is not a record.
#[derive(Debug, Error)]
pub enum LineError {
    /// Not JSON, or a name given twice.
    #[error(transparent)]
    Json(#[from] JcsError),
    /// JSON, but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// A field every record carries is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A field every record carries has the wrong form.
    #[error("{field} is not {expected}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
}

/// Reads one line. On success `body` holds the chain body: the record
/// without `event.hash`, canonical (docs/AUDIT.md, "The hash chain").
pub fn parse_line<'a>(text: &'a [u8], body: &mut Vec<u8>) -> Result<Line<'a>, LineError> {
    if let Some(fast) = std::str::from_utf8(text).ok().and_then(canonical::scan) {
        body.clear();
        body.extend_from_slice(&text[..fast.cut.0]);
        body.extend_from_slice(&text[fast.cut.1..]);
        return Ok(Line {
            agent_id: Cow::Borrowed(fast.agent_id),
            sequence: fast.sequence,
            hash: fast.hash,
            kind: Kind::Plain,
        });
    }
    parse_line_full(text, body)
}

/// [`parse_line`] without the fast path for canonical lines.
pub(crate) fn parse_line_full<'a>(
    text: &'a [u8],
    body: &mut Vec<u8>,
) -> Result<Line<'a>, LineError> {
    let mut value = jcs::parse(text)?;
    if value.as_object().is_none() {
        return Err(LineError::NotObject);
    }
    let agent_id = match value.get_path(&["agent", "id"]) {
        None => return Err(LineError::Missing("agent.id")),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(invalid("agent.id", "a non-empty string")),
    };
    let sequence = match value.get_path(&["event", "sequence"]) {
        None => return Err(LineError::Missing("event.sequence")),
        Some(v) => v
            .as_u64()
            .filter(|&n| n >= 1)
            .ok_or(invalid("event.sequence", "an integer ≥ 1"))?,
    };
    let hash = match value.remove_path(&["event", "hash"]) {
        None => return Err(LineError::Missing("event.hash")),
        Some(v) => v
            .as_str()
            .and_then(hex32)
            .ok_or(invalid("event.hash", "64 lowercase hex digits"))?,
    };
    body.clear();
    value.write_canonical(body);
    let kind = match value.get_path(&["event", "action"]).and_then(Value::as_str) {
        Some("checkpoint") => Kind::Checkpoint(checkpoint(&mut value)),
        Some("gap") => Kind::Gap(gap(&value, sequence)),
        _ => Kind::Plain,
    };
    Ok(Line {
        agent_id,
        sequence,
        hash,
        kind,
    })
}

fn invalid(field: &'static str, expected: &'static str) -> LineError {
    LineError::Invalid { field, expected }
}

/// Decodes exactly `N` bytes from `2N` lowercase hex digits.
fn hex_lower<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn field<'v, 'a>(object: &'v Value<'a>, prefix: &str, name: &str) -> Result<&'v Value<'a>, String> {
    object
        .get(name)
        .ok_or_else(|| format!("{prefix}.{name} is missing"))
}

fn u64_field(object: &Value<'_>, prefix: &str, name: &str) -> Result<u64, String> {
    field(object, prefix, name)?
        .as_u64()
        .ok_or_else(|| format!("{prefix}.{name} is not a non-negative integer"))
}

fn hex_field<const N: usize>(
    object: &Value<'_>,
    prefix: &str,
    name: &str,
) -> Result<[u8; N], String> {
    field(object, prefix, name)?
        .as_str()
        .and_then(hex_lower::<N>)
        .ok_or_else(|| format!("{prefix}.{name} is not {} lowercase hex digits", 2 * N))
}

fn str_field(object: &Value<'_>, prefix: &str, name: &str) -> Result<String, String> {
    field(object, prefix, name)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{prefix}.{name} is not a string"))
}

const CP: &str = "lbwitness.checkpoint";

fn checkpoint(record: &mut Value<'_>) -> Result<Checkpoint, String> {
    let c = record
        .get_path(&["lbwitness", "checkpoint"])
        .filter(|c| c.as_object().is_some())
        .ok_or_else(|| format!("{CP} is missing or not an object"))?;
    let is_final = match c.get("final") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("{CP}.final is not a boolean"))?,
    };
    let next_key = match c.get("next_key") {
        None => None,
        Some(k) => Some(NextKey {
            key_id: hex_field(k, "lbwitness.checkpoint.next_key", "key_id")?,
            public_key: hex_field(k, "lbwitness.checkpoint.next_key", "public_key")?,
        }),
    };
    let mut checkpoint = Checkpoint {
        first: u64_field(c, CP, "first_sequence")?,
        last: u64_field(c, CP, "last_sequence")?,
        count: u64_field(c, CP, "count")?,
        head_hash: hex_field(c, CP, "head_hash")?,
        key_id: hex_field(c, CP, "key_id")?,
        signature: hex_field(c, CP, "signature")?,
        is_final,
        next_key,
        message: Vec::new(),
    };
    record.remove_path(&["lbwitness", "checkpoint", "signature"]);
    checkpoint.message.extend_from_slice(CHECKPOINT_CONTEXT);
    record.write_canonical(&mut checkpoint.message);
    Ok(checkpoint)
}

const GAP: &str = "lbwitness.gap";
const PREV: &str = "lbwitness.gap.previous_run";

/// An optional hash member of `lbwitness.gap`.
fn optional_hash(g: &Value<'_>, name: &str) -> Result<Option<[u8; 32]>, String> {
    g.get(name).map(|_| hex_field(g, GAP, name)).transpose()
}

/// `lbwitness.gap` of the record numbered `sequence`.
fn gap(record: &Value<'_>, sequence: u64) -> Result<Gap, String> {
    let g = record
        .get_path(&["lbwitness", "gap"])
        .filter(|g| g.as_object().is_some())
        .ok_or_else(|| format!("{GAP} is missing or not an object"))?;
    let reason = str_field(g, GAP, "reason")?;
    let count = u64_field(g, GAP, "count")?;
    let restart = if reason == "restart" {
        let p = field(g, GAP, "previous_run")?;
        let clean = field(p, PREV, "clean")?
            .as_bool()
            .ok_or_else(|| format!("{PREV}.clean is not a boolean"))?;
        let last_sequence = u64_field(p, PREV, "last_sequence")?;
        let durable_sequence = u64_field(p, PREV, "durable_sequence")?;
        let declared = match (g.get("first_sequence"), g.get("last_sequence")) {
            (None, None) => None,
            _ => {
                let first = u64_field(g, GAP, "first_sequence")?;
                let last = u64_field(g, GAP, "last_sequence")?;
                // docs/AUDIT.md: first = D+1, last = S, count = S - D.
                if Some(first) != durable_sequence.checked_add(1)
                    || last != last_sequence
                    || first > last
                    || count != last - first + 1
                {
                    return Err(format!(
                        "{GAP} declares {first}..{last} (count {count}) but the previous run's \
                         durable and last sequences are {durable_sequence} and {last_sequence}"
                    ));
                }
                Some((first, last))
            }
        };
        Some(Restart {
            clean,
            last_sequence,
            last_hash: hex_field(p, PREV, "last_hash")?,
            durable_sequence,
            declared,
        })
    } else {
        None
    };
    let (mut before_hash, mut last_hash) = (None, None);
    let declared = match (&restart, g.get("first_sequence"), g.get("last_sequence")) {
        (Some(_), ..) | (None, None, None) => None,
        (None, ..) => {
            let first = u64_field(g, GAP, "first_sequence")?;
            let last = u64_field(g, GAP, "last_sequence")?;
            // docs/AUDIT.md: the range bounds the lost records; `count` of
            // them are lost (some inside may have been delivered).
            if first == 0 || first > last || count > last - first + 1 {
                return Err(format!(
                    "{GAP} declares {first}..{last} with count {count}, which does not fit"
                ));
            }
            // The agent appends the gap record after the loss, at its head.
            if last >= sequence {
                return Err(format!(
                    "declares {first}..{last}, which is not before the gap record itself"
                ));
            }
            before_hash = optional_hash(g, "before_hash")?;
            last_hash = optional_hash(g, "last_hash")?;
            Some((first, last))
        }
    };
    Ok(Gap {
        reason,
        source: str_field(g, GAP, "source")?,
        count,
        restart,
        declared,
        before_hash,
        last_hash,
    })
}

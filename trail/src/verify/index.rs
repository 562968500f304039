//! The first pass: each line is parsed once; a record whose predecessor is
//! the previous record read of its agent (in-order input) is linked at once,
//! and only a small [`Entry`] is kept. Other records keep their canonical
//! body for the second pass ([`super::chain`]), which links them against
//! every copy of their predecessor; a record linked here would be linked
//! there too, against the same copy.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use super::{
    chain, checkpoints, gaps,
    keys::key_id_bytes,
    line::{self, Checkpoint, Gap, Kind},
    report::{LineIssue, Listed, Report},
};

/// `hash(0)`: the predecessor of sequence 1.
pub(crate) const ZERO: [u8; 32] = [0; 32];

/// No body kept: the record was linked in the first pass.
pub(crate) const NO_BODY: u32 = u32::MAX;

/// Entries are collected in chunks of this many, so that growing never
/// holds twice the memory.
const CHUNK: usize = 1 << 13;

/// A file's number in this verification.
pub type FileId = u32;

/// Whether a record is linked (docs/AUDIT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// Not decided yet.
    Pending,
    /// `SHA-256(hash(n-1) || body(n))` is its stored hash.
    Linked,
    /// It is not, for any known `hash(n-1)`.
    Broken,
    /// `hash(n-1)` is unknown: record `n-1` is missing.
    Unlinkable,
}

/// What is kept of every record line: 56 bytes.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub seq: u64,
    pub hash: [u8; 32],
    pub file: FileId,
    /// Line number, saturated at `u32::MAX`.
    pub line: u32,
    /// Index into the agent's kept bodies, or [`NO_BODY`].
    pub body: u32,
    pub link: Link,
    pub covered: bool,
}

/// A checkpoint or gap record, with its decoded fields.
#[derive(Debug)]
pub(crate) struct Special<T> {
    pub seq: u64,
    pub file: FileId,
    pub line: u32,
    pub hash: [u8; 32],
    pub fields: Result<T, String>,
}

impl<T> Special<T> {
    fn new(e: &Entry, fields: Result<T, String>) -> Self {
        Self {
            seq: e.seq,
            file: e.file,
            line: e.line,
            hash: e.hash,
            fields,
        }
    }

    /// Where it is: its sort key.
    pub(crate) fn key(&self) -> (u64, FileId, u32) {
        (self.seq, self.file, self.line)
    }
}

/// One agent's records, as the first pass leaves them.
pub(crate) struct AgentLog {
    pub id: Box<str>,
    chunks: Vec<Vec<Entry>>,
    bodies: Vec<u8>,
    spans: Vec<(usize, usize)>,
    pub checkpoints: Vec<Special<Checkpoint>>,
    pub gaps: Vec<Special<Gap>>,
    /// The previous record read of this agent: sequence, stored hash.
    last: Option<(u64, [u8; 32])>,
    pub lines: u64,
}

impl AgentLog {
    fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            chunks: Vec::new(),
            bodies: Vec::new(),
            spans: Vec::new(),
            checkpoints: Vec::new(),
            gaps: Vec::new(),
            last: None,
            lines: 0,
        }
    }

    fn keep_body(&mut self, body: &[u8]) -> u32 {
        let index = u32::try_from(self.spans.len()).expect("fewer than 2^32 kept bodies");
        self.spans.push((self.bodies.len(), body.len()));
        self.bodies.extend_from_slice(body);
        index
    }

    fn push(&mut self, entry: Entry) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(entry);
                self.chunks.push(chunk);
            }
        }
    }

    /// A kept body.
    pub(crate) fn body(&self, index: u32) -> &[u8] {
        let (offset, len) = self.spans[index as usize];
        &self.bodies[offset..offset + len]
    }

    /// All entries in one vector, sorted by `(sequence, file, line)`.
    pub(crate) fn take_entries(&mut self) -> Vec<Entry> {
        let total = self.chunks.iter().map(Vec::len).sum();
        let mut entries = Vec::with_capacity(total);
        for chunk in self.chunks.drain(..) {
            entries.extend(chunk);
        }
        let key = |e: &Entry| (e.seq, e.file, e.line);
        if !entries.is_sorted_by_key(key) {
            entries.sort_unstable_by_key(key);
        }
        entries
    }

    /// Frees the kept bodies.
    pub(crate) fn drop_bodies(&mut self) {
        self.bodies = Vec::new();
        self.spans = Vec::new();
    }
}

/// `SHA-256(prev || body)`.
pub(crate) fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

/// The verifier's core: feed it every line of every file, in any order,
/// then [`finish`](Self::finish). No I/O.
pub struct Verifier {
    /// Keys trusted for every agent.
    trusted: HashMap<[u8; 32], VerifyingKey>,
    /// Keys trusted for one agent only (`--key AGENT_ID=PUBKEY`).
    bound: HashMap<String, Vec<VerifyingKey>>,
    live: bool,
    files: Vec<String>,
    agents: Vec<AgentLog>,
    by_id: HashMap<Box<str>, usize>,
    last_agent: usize,
    lines: u64,
    blank: u64,
    partial: Listed<(FileId, u64, Option<u64>, String)>,
    unparsable: Listed<(FileId, u64, Option<u64>, String)>,
    body: Vec<u8>,
}

impl Verifier {
    /// Trusts `key` for agent `agent_id` only: a checkpoint of any other
    /// agent signed with it is untrusted.
    pub fn trust_for(&mut self, agent_id: &str, key: VerifyingKey) {
        self.bound.entry(agent_id.to_owned()).or_default().push(key);
    }

    /// A verifier trusting `trusted` keys for every agent; `live` accepts an
    /// open end (the agent is still running).
    pub fn new(trusted: &[VerifyingKey], live: bool) -> Self {
        Self {
            trusted: trusted.iter().map(|k| (key_id_bytes(k), *k)).collect(),
            bound: HashMap::new(),
            live,
            files: Vec::new(),
            agents: Vec::new(),
            by_id: HashMap::new(),
            last_agent: usize::MAX,
            lines: 0,
            blank: 0,
            partial: Listed::default(),
            unparsable: Listed::default(),
            body: Vec::with_capacity(4096),
        }
    }

    /// Registers a file; its lines are then pushed with the returned id.
    pub fn add_file(&mut self, name: impl Into<String>) -> FileId {
        self.files.push(name.into());
        FileId::try_from(self.files.len() - 1).expect("fewer than 2^32 files")
    }

    /// Takes one line (without its `\n`); `line_no` counts from 1.
    /// `terminated` is false for a last line that had no `\n`: with `--live`
    /// such a line that does not parse is a write in progress, not damage.
    pub fn push_line(&mut self, file: FileId, line_no: u64, text: &[u8], terminated: bool) {
        self.lines += 1;
        if text.iter().all(u8::is_ascii_whitespace) {
            self.blank += 1;
            return;
        }
        let parsed = match line::parse_line(text, &mut self.body) {
            Ok(parsed) => parsed,
            Err(e) if !terminated && self.live => {
                self.partial
                    .push_with(|| (file, line_no, None, e.to_string()));
                return;
            }
            Err(e) => {
                self.unparsable
                    .push_with(|| (file, line_no, None, e.to_string()));
                return;
            }
        };
        let index = self.agent_index(&parsed.agent_id);
        let agent = &mut self.agents[index];
        let seq = parsed.sequence;
        let prev = if seq == 1 {
            Some(ZERO)
        } else {
            agent
                .last
                .filter(|&(s, _)| s.checked_add(1) == Some(seq))
                .map(|(_, h)| h)
        };
        let linked = prev.is_some_and(|p| chain_hash(&p, &self.body) == parsed.hash);
        let body = if linked {
            NO_BODY
        } else {
            agent.keep_body(&self.body)
        };
        let entry = Entry {
            seq,
            hash: parsed.hash,
            file,
            line: u32::try_from(line_no).unwrap_or(u32::MAX),
            body,
            link: if linked { Link::Linked } else { Link::Pending },
            covered: false,
        };
        match parsed.kind {
            Kind::Plain => {}
            Kind::Checkpoint(fields) => agent.checkpoints.push(Special::new(&entry, fields)),
            Kind::Gap(fields) => agent.gaps.push(Special::new(&entry, fields)),
        }
        agent.push(entry);
        agent.last = Some((seq, parsed.hash));
        agent.lines += 1;
    }

    /// Takes a line that was longer than the input's limit (only its
    /// place and length were kept): not a record, so unparsable.
    pub fn push_overlong(&mut self, file: FileId, line_no: u64, offset: u64, error: String) {
        self.lines += 1;
        self.unparsable
            .push_with(|| (file, line_no, Some(offset), error));
    }

    fn agent_index(&mut self, id: &str) -> usize {
        if self
            .agents
            .get(self.last_agent)
            .is_some_and(|a| &*a.id == id)
        {
            return self.last_agent;
        }
        let index = match self.by_id.get(id) {
            Some(&i) => i,
            None => {
                self.agents.push(AgentLog::new(id));
                self.by_id.insert(id.into(), self.agents.len() - 1);
                self.agents.len() - 1
            }
        };
        self.last_agent = index;
        index
    }

    /// The second pass: links, duplicates, missing ranges, checkpoints,
    /// coverage; then the verdicts.
    pub fn finish(mut self) -> Report {
        let bound = std::mem::take(&mut self.bound);
        let global = self.trusted.clone();
        let trusted_for = |agent: &str| {
            let mut keys = global.clone();
            for k in bound.get(agent).into_iter().flatten() {
                keys.insert(key_id_bytes(k), *k);
            }
            keys
        };
        self.agents.sort_by(|a, b| a.id.cmp(&b.id));
        let files = &self.files;
        let name = |f: FileId| files[f as usize].clone();
        let agents = self
            .agents
            .into_iter()
            .map(|mut agent| {
                let mut entries = agent.take_entries();
                let (mut report, holes) = chain::analyze(&mut agent, &mut entries, &name);
                agent.drop_bodies();
                let trusted = trusted_for(&agent.id);
                checkpoints::check(&agent, &mut entries, &trusted, &name, &mut report);
                gaps::cover_before_holes(&agent.gaps, &mut entries);
                gaps::declare(&agent.gaps, &entries, &holes, self.live, &mut report);
                checkpoints::coverage(&entries, self.live, &mut report);
                report.verdict = report.judge(self.live);
                report
            })
            .collect();
        let issues = |listed: Listed<(FileId, u64, Option<u64>, String)>| Listed {
            count: listed.count,
            items: listed
                .items
                .into_iter()
                .map(|(f, line, offset, error)| LineIssue {
                    file: name(f),
                    line,
                    offset,
                    error,
                })
                .collect(),
        };
        Report::new(
            self.live,
            (self.files.len() as u64, self.lines, self.blank),
            issues(self.partial),
            issues(self.unparsable),
            agents,
        )
    }
}

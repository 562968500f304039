//! Builders for the trail's own records (docs/AUDIT.md): start, stop,
//! hooks, restart gaps, config reloads, key rotations, file changes and the
//! unsigned base of checkpoints.

use std::{path::Path, time::SystemTime};

use lbwitness_trail::record::{
    Event, Observer, Record,
    audit::{
        ConfigReload, File, FileExtra, FileHash, Gap, Hook, KeyRotation, PreviousRun as Prev,
        Process, Start, Stop, User, WatchStopped,
    },
};

use super::state::PreviousRun;
use crate::{
    clock::rfc3339,
    watch::{ChangeKind, FileChange},
};

const DATASET: &str = "lbwitness.audit";

/// Makes audit records for this host.
#[derive(Clone, Debug)]
pub struct AuditRecords {
    hostname: String,
}

impl AuditRecords {
    /// Records observed on `hostname`.
    pub fn new(hostname: String) -> Self {
        Self { hostname }
    }

    fn record(
        &self,
        action: &'static str,
        kind: &'static str,
        category: &'static [&'static str],
        types: &'static [&'static str],
        at: SystemTime,
    ) -> Record {
        Record::new(
            Event::new(DATASET, action, kind, category, types),
            rfc3339(at),
            Observer {
                hostname: self.hostname.clone(),
                ingress: None,
                product: "lbwitness",
                kind: "sensor",
            },
        )
    }

    /// `agent-start`.
    pub fn start(&self, at: SystemTime, start: Start) -> Record {
        let mut r = self.record("agent-start", "event", &["process"], &["start"], at);
        r.lbwitness.start = Some(start);
        r
    }

    /// `agent-stop`.
    pub fn stop(&self, at: SystemTime, stop: Stop) -> Record {
        let mut r = self.record("agent-stop", "event", &["process"], &["end"], at);
        r.lbwitness.stop = Some(stop);
        r
    }

    /// `hook-attach` or `hook-detach`.
    pub fn hook(&self, at: SystemTime, attached: bool, hook: Hook) -> Record {
        let (action, types): (&'static str, &'static [&'static str]) = if attached {
            ("hook-attach", &["start"])
        } else {
            ("hook-detach", &["end"])
        };
        let mut r = self.record(action, "event", &["configuration"], types, at);
        r.lbwitness.hook = Some(hook);
        r
    }

    /// The restart gap record: the first record of every run but the first.
    /// `last` is the head this run continues after.
    pub fn restart(
        &self,
        at: SystemTime,
        last: lbwitness_trail::chain::Head,
        prev: PreviousRun,
    ) -> Record {
        let mut r = self.record("gap", "event", &["process"], &["start"], at);
        r.event.reason = Some(if prev.clean {
            "restart"
        } else {
            "restart-after-crash"
        });
        r.lbwitness.gap = Some(Gap {
            before_hash: None,
            class: "restart",
            count: prev.unconfirmed.map_or(0, |(a, b)| b - a + 1),
            first_sequence: prev.unconfirmed.map(|(a, _)| a),
            last_hash: None,
            last_sequence: prev.unconfirmed.map(|(_, b)| b),
            previous_run: Some(Prev {
                clean: prev.clean,
                durable_sequence: prev.durable,
                last_hash: hex::encode(last.hash),
                last_sequence: last.sequence,
            }),
            reason: "restart",
            source: "agent",
        });
        r
    }

    /// A spool loss: `count` records of `first..=last` were sealed but lost
    /// before any collector group had them all (docs/AUDIT.md).
    pub fn spool_loss(&self, at: SystemTime, gap: Gap) -> Record {
        let mut r = self.record("gap", "event", &["process"], &["info", "error"], at);
        r.event.reason = Some(gap.reason);
        r.lbwitness.gap = Some(gap);
        r
    }

    /// The unsigned base of a checkpoint.
    pub fn checkpoint(&self, at: SystemTime, reason: &'static str) -> Record {
        let mut r = self.record("checkpoint", "state", &["process"], &["info"], at);
        r.event.reason = Some(reason);
        r
    }

    /// `config-reload`.
    pub fn config_reload(&self, at: SystemTime, reload: ConfigReload) -> Record {
        let mut r = self.record(
            "config-reload",
            "event",
            &["configuration"],
            &["change"],
            at,
        );
        r.lbwitness.config = Some(reload);
        r
    }

    /// `key-rotation`.
    pub fn key_rotation(&self, at: SystemTime, previous_key_id: &str, key_id: &str) -> Record {
        let mut r = self.record("key-rotation", "event", &["configuration"], &["change"], at);
        r.lbwitness.key = Some(KeyRotation {
            key_id: key_id.to_owned(),
            previous_key_id: previous_key_id.to_owned(),
        });
        r
    }

    /// `watch-stopped`: changes to `paths` are no longer recorded.
    pub fn watch_stopped(
        &self,
        at: SystemTime,
        paths: &[std::path::PathBuf],
        error: String,
    ) -> Record {
        let mut r = self.record(
            "watch-stopped",
            "event",
            &["file", "configuration"],
            &["end", "error"],
            at,
        );
        r.lbwitness.watch = Some(WatchStopped {
            error,
            paths: paths.iter().map(|p| p.display().to_string()).collect(),
        });
        r
    }

    /// `file-change`.
    pub fn file_change(&self, change: &FileChange) -> Record {
        let types: &'static [&'static str] = match change.kind {
            ChangeKind::Created => &["creation"],
            ChangeKind::Deleted => &["deletion"],
            _ => &["change"],
        };
        let mut r = self.record(
            "file-change",
            "event",
            &["file", "configuration"],
            types,
            change.observed,
        );
        let path: &Path = &change.path;
        r.file = Some(File {
            directory: path
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            hash: change.current.as_ref().map(|c| FileHash {
                sha256: c.sha256.clone(),
            }),
            mtime: change.current.as_ref().and_then(|c| c.mtime).map(rfc3339),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: path.display().to_string(),
            size: change.current.as_ref().map(|c| c.size),
        });
        r.lbwitness.file = Some(FileExtra {
            attribution: change.writer.as_ref().map(|w| w.evidence.as_str()),
            change: change.kind.as_str(),
            previous_sha256: change.previous.as_ref().map(|p| p.sha256.clone()),
            previous_size: change.previous.as_ref().map(|p| p.size),
            unreadable: change.unreadable.clone(),
        });
        if let Some(w) = &change.writer {
            r.process = Some(Process {
                executable: w.executable.clone(),
                name: w.process_name.clone(),
                pid: w.pid,
                thread: None,
            });
            r.user = w.uid.map(|uid| User {
                id: uid.to_string(),
                name: w.user_name.clone(),
            });
        }
        r
    }
}

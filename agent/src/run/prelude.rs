//! The first records of a run: the restart gap (after a previous run), the
//! start record, one `hook-attach` per attachment, the watched files'
//! changes made while the agent was not running, and what the spool lost
//! while it was down.

use std::time::SystemTime;

use lbwitness_trail::record::{
    Record,
    audit::{
        CaptureInterface, Gap, PreviousChain, Start, StartPseudonyms, WatchProblem, WatchedFile,
    },
};

use super::hooks::hook;
use crate::{
    audit::{records::AuditRecords, state::Resume},
    capture::{
        attach::Attachment,
        requests::{HookChoice, Via},
    },
    watch::{PathNote, Startup},
};

/// What the first records of a run say.
pub(super) struct Prelude<'a> {
    /// Makes the records.
    pub(super) records: &'a AuditRecords,
    /// Where the chain continues, and what it says about the previous run.
    pub(super) resume: &'a Resume,
    /// The config's SHA-256.
    pub(super) config_sha256: &'a str,
    /// The checkpoint key's id.
    pub(super) key_id: &'a str,
    /// The XDP attachments.
    pub(super) attachments: &'a [Attachment],
    /// How each request-capture hook is served (empty when request
    /// capture is off).
    pub(super) request_hooks: &'a [HookChoice],
    /// What the file watcher found at start.
    pub(super) startup: &'a Startup,
    /// The chain this one replaced, if it is new.
    pub(super) previous_chain: Option<PreviousChain>,
    /// What the spool lost while the agent was down.
    pub(super) spool_losses: &'a [Gap],
    /// What this run pseudonymises, when it does.
    pub(super) pseudonyms: Option<StartPseudonyms>,
}

impl Prelude<'_> {
    /// The records, in the order they are chained.
    pub(super) fn into_records(self) -> Vec<Record> {
        let now = SystemTime::now();
        let records = self.records;
        let mut prelude = Vec::new();
        if let Some(previous) = self.resume.previous {
            prelude.push(records.restart(now, self.resume.head, previous));
        }
        prelude.push(records.start(now, self.start()));
        prelude.extend(
            self.attachments
                .iter()
                .map(|a| records.hook(now, true, hook(a))),
        );
        prelude.extend(self.startup.changes.iter().map(|c| records.file_change(c)));
        // What the spool lost while the agent was down, right after the start.
        prelude.extend(
            self.spool_losses
                .iter()
                .map(|l| records.spool_loss(SystemTime::now(), l.clone())),
        );
        prelude
    }

    /// `lbwitness.start`.
    fn start(&self) -> Start {
        let attachments = self.attachments;
        Start {
            capture: attachments
                .iter()
                .map(|a| CaptureInterface {
                    fallback: a.fallback.clone(),
                    interface: a.iface.clone(),
                    xdp_mode: a.mode.as_str(),
                })
                .collect(),
            config_sha256: self.config_sha256.to_owned(),
            // XDP per interface, then each request hook that is served
            // (`requests/<hook>/<tracepoint|kprobe|uprobe>`).
            hooks: attachments
                .iter()
                .map(|a| format!("xdp/{}/{}", a.iface, a.mode.as_str()))
                .chain(
                    self.request_hooks
                        .iter()
                        .filter(|c| c.via != Via::Unavailable)
                        .map(|c| format!("requests/{}/{}", c.hook.as_str(), c.via.as_str())),
                )
                .collect(),
            interfaces: attachments.iter().map(|a| a.iface.clone()).collect(),
            key_id: self.key_id.to_owned(),
            previous_chain: self.previous_chain.clone(),
            pseudonyms: self.pseudonyms.clone(),
            version: env!("CARGO_PKG_VERSION"),
            watch_problems: watch_problems(self.startup),
            watched_files: self
                .startup
                .current
                .iter()
                .map(|(path, state)| WatchedFile {
                    path: path.display().to_string(),
                    sha256: state.as_ref().map(|s| s.sha256.clone()),
                    size: state.as_ref().map(|s| s.size),
                })
                .collect(),
        }
    }
}

/// What the start record says about paths the watcher cannot fully watch.
fn watch_problems(startup: &Startup) -> Vec<WatchProblem> {
    let note = |kind: &str, n: &PathNote| WatchProblem {
        path: n.path.display().to_string(),
        problem: format!("{kind}: {}", n.reason),
    };
    let mut problems: Vec<WatchProblem> = startup
        .skipped
        .iter()
        .map(|n| note("not watched", n))
        .chain(
            startup
                .unattributed
                .iter()
                .map(|n| note("writers not attributed", n)),
        )
        .chain(startup.unreadable.iter().map(|n| note("unreadable", n)))
        .collect();
    if let Some(problem) = &startup.state_problem {
        problems.push(WatchProblem {
            path: String::new(),
            problem: format!("changes while stopped not checked: {problem}"),
        });
    }
    for p in &problems {
        tracing::warn!(path = %p.path, problem = %p.problem, "watched files");
    }
    problems
}

//! Settling: hashing the paths whose events went quiet, deciding what
//! changed, attributing it, sending it, and recording it in the state file.

use std::{
    io,
    path::PathBuf,
    time::{Instant, SystemTime},
};

use tracing::{debug, warn};

use super::{
    Observation, WatchError, Writer,
    change::{change, classify},
    fanotify::Mode,
    hash, procfs,
    run::{Session, kernel},
    state,
    watcher::{Core, symlink_target},
};

/// One path to hash on the blocking pool, with its writer candidates.
struct Job {
    path: PathBuf,
    direct: Option<Writer>,
    inferred: Option<Writer>,
}

struct Done {
    observation: Observation,
    target: Option<PathBuf>,
    direct: Option<Writer>,
    inferred: Option<Writer>,
}

impl Job {
    fn run(self) -> Done {
        Done {
            observation: hash::observe(&self.path),
            target: symlink_target(&self.path),
            direct: self.direct.map(with_user_name),
            inferred: self.inferred.map(with_user_name),
        }
    }
}

fn with_user_name(mut w: Writer) -> Writer {
    if w.user_name.is_none() {
        w.user_name = w.uid.and_then(procfs::user_name);
    }
    w
}

/// Rewrites the state file on the blocking pool.
pub(super) async fn persist(core: &Core) -> io::Result<()> {
    let bytes = core.encode_state();
    let path = core.state_file.clone();
    tokio::task::spawn_blocking(move || state::save(&path, &bytes))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

impl Session {
    /// Hashes the due paths and sends what changed. `Ok(false)` when the
    /// receiver is gone.
    pub(super) async fn settle(&mut self, due: Vec<usize>) -> Result<bool, WatchError> {
        if due.is_empty() {
            return Ok(true);
        }
        self.drain_fanotify();
        let now = Instant::now();
        let descriptors = self
            .fanotify
            .as_ref()
            .is_some_and(|g| g.get_ref().mode() == Mode::Descriptors);
        let jobs: Vec<Job> = due
            .iter()
            .map(|&i| {
                let watched = &self.core.registry.paths[i];
                Job {
                    path: watched.path.clone(),
                    direct: self.recent.take(&watched.locations, now),
                    inferred: descriptors
                        .then(|| self.recent.peek_directory(&watched.locations, now))
                        .flatten(),
                }
            })
            .collect();
        let done = tokio::task::spawn_blocking(move || jobs.into_iter().map(Job::run).collect())
            .await
            .map_err(|e| WatchError::Hashing(e.to_string()))?;
        let observed = SystemTime::now();
        let mut changed = false;
        for (i, done) in due.into_iter().zip::<Vec<Done>>(done) {
            self.core.follow_target(
                kernel(&self.inotify, self.fanotify.as_ref()),
                i,
                done.target.as_deref(),
            );
            let previous = &self.core.states[i];
            let Some(kind) = classify(previous, &done.observation) else {
                continue;
            };
            let locations = &self.core.registry.paths[i].locations;
            // A writer of another entry explains only content that appeared
            // (a rename over the path), never a deletion.
            let writer = match (done.direct, done.observation.state()) {
                (Some(w), _) => Some(w),
                (None, Some(_)) if done.inferred.is_some() => {
                    self.recent.forget_directory(locations);
                    done.inferred
                }
                (None, _) => None,
            };
            let path = self.core.registry.paths[i].path.clone();
            debug!(path = %path.display(), change = kind.as_str(), pid = writer.as_ref().map(|w| w.pid), "watched file changed");
            let record = change(path, kind, previous, &done.observation, observed, writer);
            self.core.states[i] = done.observation;
            if self.tx.send(record).await.is_err() {
                return Ok(false);
            }
            changed = true;
        }
        if changed && let Err(e) = persist(&self.core).await {
            warn!(
                path = %self.core.state_file.display(),
                error = %e,
                "cannot update the watch state file: the next start may report these changes again"
            );
        }
        Ok(true)
    }
}

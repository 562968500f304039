//! [`Session`]: a running watcher. The event loop over inotify and
//! fanotify, woken by epoll through tokio's `AsyncFd`; what each queue's
//! events do; and settling: hashing the paths whose events went quiet,
//! deciding what changed, attributing it to the writers fanotify reported
//! (resolved through /proc at once, before they can exit), sending it, and
//! recording it in the state file.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs, io,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{
        Interest,
        unix::{AsyncFd, AsyncFdReadyGuard},
    },
    sync::mpsc,
    time::{self, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    FileChange, Observation, WatchError, Writer,
    attribution::Recent,
    change::{change, classify},
    dirs::Effect,
    fanotify::{self, Fanotify, Mode, Target},
    hash,
    inotify::{self, Inotify},
    pending::Pending,
    procfs,
    watcher::{Core, Kernel, symlink_target},
};

/// One read(2) of either queue (inotify events are 16 bytes plus the name).
const EVENT_BUFFER: usize = 64 * 1024;
/// How long a reported writer stays eligible for a change: longer than the
/// settle time and the longest delay together.
const ATTRIBUTION_WINDOW: Duration = Duration::from_secs(5);
/// How often a deleted or moved watched directory is looked for again, and
/// watched directories' paths are checked for a re-pointed symbolic link.
const RETRY_LOST: Duration = Duration::from_secs(2);

/// A running watcher: the kernel queues registered with tokio, and what is
/// waiting to be hashed or attributed.
pub(super) struct Session {
    core: Core,
    inotify: AsyncFd<Inotify>,
    /// `None` without attribution, or once reading it failed.
    fanotify: Option<AsyncFd<Fanotify>>,
    pending: Pending,
    recent: Recent,
    /// One read(2) of either queue.
    buf: Vec<u8>,
    tx: mpsc::Sender<FileChange>,
    /// Whether the fanotify overflow was logged already.
    fanotify_overflowed: bool,
}

impl Session {
    /// Rewrites the state file and registers the queues with tokio.
    ///
    /// # Errors
    ///
    /// [`WatchError::StateFile`] when the state file cannot be written,
    /// [`WatchError::Register`] outside a tokio runtime with I/O. A
    /// fanotify group that cannot be polled only loses attribution.
    pub(super) async fn start(
        core: Core,
        inotify: Inotify,
        fanotify: Option<Fanotify>,
        tx: mpsc::Sender<FileChange>,
    ) -> Result<Self, WatchError> {
        core.persist()
            .await
            .map_err(|source| WatchError::StateFile {
                path: core.state_file.clone(),
                source,
            })?;
        // SAFETY: `Inotify` and `Fanotify` (below) own their descriptor and
        // never close or replace it while the AsyncFd owns them.
        let inotify = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) }
            .map_err(|e| WatchError::Register(e.into()))?;
        let fanotify = fanotify.and_then(|group| {
            // SAFETY: as above.
            unsafe { AsyncFd::register_with_interest(group, Interest::READABLE) }
                .map_err(io::Error::from)
                .inspect_err(
                    |e| warn!(error = %e, "cannot poll fanotify: writers will not be attributed"),
                )
                .ok()
        });
        let pending = Pending::new(core.options.settle, core.options.max_delay);
        Ok(Self {
            core,
            inotify,
            fanotify,
            pending,
            recent: Recent::new(ATTRIBUTION_WINDOW),
            buf: vec![0; EVENT_BUFFER],
            tx,
            fanotify_overflowed: false,
        })
    }

    /// Runs until `shutdown`, then reports what is already queued; returns
    /// early, `Ok`, when the receiver is dropped.
    pub(super) async fn run(mut self, shutdown: CancellationToken) -> Result<(), WatchError> {
        let mut retry = time::interval(RETRY_LOST);
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let deadline = self.pending.next_deadline();
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.tx.closed() => return Ok(()),
                () = time::sleep_until(time::Instant::from_std(
                    deadline.unwrap_or_else(|| Instant::now() + RETRY_LOST),
                )), if deadline.is_some() => {
                    let due = self.pending.take_due(Instant::now());
                    if !self.settle(due).await? {
                        return Ok(());
                    }
                }
                _ = retry.tick() => {
                    self.check_resolved();
                    self.retry_lost();
                }
                ready = fan_readable(self.fanotify.as_ref()) => {
                    let result = match ready {
                        Ok(mut guard) => guard
                            .try_io(|fd| fanotify::read(fd.get_ref(), &mut self.buf))
                            .unwrap_or_else(|_would_block| Ok(Vec::new())),
                        Err(e) => Err(e),
                    };
                    self.on_fanotify_read(result);
                }
                ready = self.inotify.readable() => {
                    let mut guard = ready.map_err(WatchError::Read)?;
                    let n = match guard.try_io(|fd| fd.get_ref().read(&mut self.buf)) {
                        Ok(Ok(n)) => n,
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => 0,
                        Ok(Err(e)) => return Err(WatchError::Read(e)),
                        Err(_would_block) => 0,
                    };
                    drop(guard);
                    let events = inotify::parse(&self.buf[..n]);
                    self.on_inotify(events);
                }
            }
        }
        // Report what is already queued: a change made just before the stop
        // is reported now, not as changed-while-stopped at the next start.
        self.drain_inotify()?;
        let all = self.pending.take_all();
        self.settle(all).await?;
        Ok(())
    }

    // ---- inotify: which paths to hash again ----

    fn drain_inotify(&mut self) -> Result<(), WatchError> {
        loop {
            match self.inotify.get_ref().read(&mut self.buf) {
                Ok(n) => {
                    let events = inotify::parse(&self.buf[..n]);
                    self.on_inotify(events);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WatchError::Read(e)),
            }
        }
    }

    fn on_inotify(&mut self, events: Vec<inotify::Event>) {
        let now = Instant::now();
        for ev in events {
            match self.core.registry.effect(&ev) {
                Effect::RehashAll => {
                    warn!("the inotify queue overflowed: re-hashing every watched file");
                    for i in 0..self.core.registry.paths.len() {
                        self.pending.touch(i, now);
                    }
                }
                Effect::Lost => self.lose(ev.wd, now),
                Effect::Rehash { paths, drop_watch } => {
                    if drop_watch {
                        self.inotify.get_ref().remove(ev.wd);
                    }
                    for i in paths {
                        self.pending.touch(i, now);
                    }
                }
            }
        }
    }

    /// A directory's watch is gone (deleted, moved, unmounted).
    fn lose(&mut self, wd: i32, now: Instant) {
        for d in 0..self.core.registry.dirs.len() {
            if self.core.registry.dirs[d].wd != Some(wd) {
                continue;
            }
            warn!(
                dir = %self.core.registry.dirs[d].path.display(),
                "a watched directory is gone (deleted, moved, unmounted, or its path re-pointed): watching its path again"
            );
            self.core.registry.dirs[d].wd = None;
            for i in self.core.registry.in_dir(d) {
                self.pending.touch(i, now);
            }
        }
    }

    /// Drops watches whose directory path now resolves elsewhere (a
    /// symbolic link on the way was re-pointed, as release switches do), so
    /// that `retry_lost` watches the new directory at once.
    fn check_resolved(&mut self) {
        let stale: Vec<i32> = self
            .core
            .registry
            .dirs
            .iter()
            .filter(|d| d.wd.is_some() && fs::canonicalize(&d.path).ok() != d.resolved)
            .filter_map(|d| d.wd)
            .collect();
        let now = Instant::now();
        for wd in stale {
            // IN_IGNORED follows, for a descriptor no directory holds any more.
            self.inotify.get_ref().remove(wd);
            self.lose(wd, now);
        }
    }

    fn retry_lost(&mut self) {
        let now = Instant::now();
        let kernel = kernel(&self.inotify, self.fanotify.as_ref());
        for d in self.core.registry.lost() {
            let mut dir = self.core.registry.dirs[d].clone();
            let Ok(wd) = kernel.inotify.add_dir(&dir.path) else {
                continue;
            };
            info!(dir = %dir.path.display(), "watching a directory again");
            dir.wd = Some(wd);
            dir.resolved = fs::canonicalize(&dir.path).ok();
            self.core.mark(kernel, &mut dir);
            self.core.registry.dirs[d] = dir;
            for i in self.core.registry.in_dir(d) {
                self.pending.touch(i, now);
            }
        }
    }

    // ---- fanotify: who wrote ----

    fn on_fanotify_read(&mut self, result: io::Result<Vec<fanotify::Event>>) {
        match result {
            Ok(events) => self.on_fanotify(events),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Errors here do not clear readiness: keep reading and the
                // loop would spin. Detection goes on without attribution.
                warn!(error = %e, "reading fanotify events failed: writers will not be attributed from now on");
                self.fanotify = None;
            }
        }
    }

    /// Reads what fanotify has queued without waiting, so every write the
    /// kernel reported before a change is hashed is attributed to it.
    fn drain_fanotify(&mut self) {
        loop {
            let Some(group) = self.fanotify.as_ref() else {
                return;
            };
            match fanotify::read(group.get_ref(), &mut self.buf) {
                Ok(events) if events.is_empty() => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                result => self.on_fanotify_read(result),
            }
        }
    }

    fn on_fanotify(&mut self, events: Vec<fanotify::Event>) {
        let Some(mode) = self.fanotify.as_ref().map(|g| g.get_ref().mode()) else {
            return;
        };
        let now = Instant::now();
        let me = std::process::id();
        // A burst of writes by one process is resolved once.
        let mut resolved: HashMap<u32, Writer> = HashMap::new();
        for ev in events {
            if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
                if !self.fanotify_overflowed {
                    warn!("the fanotify queue overflowed: some writers will not be attributed");
                    self.fanotify_overflowed = true;
                }
                continue;
            }
            // 0: a process outside the agent's pid namespace.
            let Some(pid) = u32::try_from(ev.pid).ok().filter(|&p| p != 0) else {
                continue;
            };
            let registry = &self.core.registry;
            let hits: Vec<(usize, OsString)> = match &ev.target {
                Target::Name(id, name) => registry
                    .dirs_by_handle(id)
                    .into_iter()
                    .map(|d| (d, name.clone()))
                    .collect(),
                Target::Path(path) => match (path.parent(), path.file_name()) {
                    (Some(parent), Some(name)) => registry
                        .dirs_by_path(parent)
                        .into_iter()
                        .map(|d| (d, name.to_owned()))
                        .collect(),
                    _ => Vec::new(),
                },
                Target::Unknown => Vec::new(),
            };
            for (dir, name) in hits {
                let watched = self.core.registry.is_watched(dir, &name);
                // Other entries only count as the directory's latest writer,
                // which only the descriptors mode uses; the agent's own
                // writes (its state file) never do.
                if !watched && (mode != Mode::Descriptors || pid == me) {
                    continue;
                }
                let writer = resolved
                    .entry(pid)
                    .or_insert_with(|| procfs::writer(pid))
                    .clone();
                self.recent.record(dir, name, watched, now, writer);
            }
        }
    }

    // ---- settling: hash, decide, attribute, send ----

    /// Hashes the due paths and sends what changed. `Ok(false)` when the
    /// receiver is gone.
    async fn settle(&mut self, due: Vec<usize>) -> Result<bool, WatchError> {
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
        if changed && let Err(e) = self.core.persist().await {
            warn!(
                path = %self.core.state_file.display(),
                error = %e,
                "cannot update the watch state file: the next start may report these changes again"
            );
        }
        Ok(true)
    }
}

/// The kernel objects, borrowed apart from the rest of the session.
fn kernel<'a>(
    inotify: &'a AsyncFd<Inotify>,
    fanotify: Option<&'a AsyncFd<Fanotify>>,
) -> Kernel<'a> {
    Kernel {
        inotify: inotify.get_ref(),
        fanotify: fanotify.map(AsyncFd::get_ref),
    }
}

async fn fan_readable(
    fd: Option<&AsyncFd<Fanotify>>,
) -> io::Result<AsyncFdReadyGuard<'_, Fanotify>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

/// One path to hash on the blocking pool, with its writer candidates.
struct Job {
    path: PathBuf,
    direct: Option<Writer>,
    inferred: Option<Writer>,
}

/// A hashed path: what is there now, and who may have put it there.
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

//! Watching: the event loop over inotify and fanotify, woken by epoll
//! through tokio's `AsyncFd`.

use std::{
    fs, io,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
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
use tracing::{info, warn};

use super::{
    FileChange, WatchError, Watcher,
    attribution::Recent,
    dirs::Effect,
    fanotify::{self, Fanotify},
    inotify::{self, Inotify},
    pending::Pending,
    settle::persist,
    watcher::{Core, Kernel},
};

/// One read(2) of either queue (inotify events are 16 bytes plus the name).
const EVENT_BUFFER: usize = 64 * 1024;
/// How long a reported writer stays eligible for a change: longer than the
/// settle time and the longest delay together.
const ATTRIBUTION_WINDOW: Duration = Duration::from_secs(5);
/// How often a deleted or moved watched directory is looked for again, and
/// watched directories' paths are checked for a re-pointed symbolic link.
const RETRY_LOST: Duration = Duration::from_secs(2);

impl Watcher {
    /// Sends a [`FileChange`] each time a watched path's content (SHA-256)
    /// or existence changes, until `shutdown`; then reports what is already
    /// queued and returns. Also returns, `Ok`, when the receiver is dropped.
    /// Changes that make no difference to the content (`touch`, a rewrite
    /// with the same bytes) are not reported.
    ///
    /// The state file is rewritten first, then after each batch of changes,
    /// always after the changes were sent: a crash in between makes the next
    /// run report them again (as changed-while-stopped), never lose them.
    /// Failing to write it at start is an error; later failures are logged
    /// and retried with the next change.
    ///
    /// # Errors
    ///
    /// [`WatchError::StateFile`] when the state file cannot be written at
    /// start, [`WatchError::Register`] outside a tokio runtime with I/O, and
    /// [`WatchError::Read`] when inotify cannot be read. Fanotify failures
    /// are never errors: attribution stops and detection goes on.
    pub async fn run(
        self,
        tx: mpsc::Sender<FileChange>,
        shutdown: CancellationToken,
    ) -> Result<(), WatchError> {
        let Watcher {
            core,
            inotify,
            fanotify,
        } = self;
        persist(&core)
            .await
            .map_err(|source| WatchError::StateFile {
                path: core.state_file.clone(),
                source,
            })?;
        // SAFETY (both): `Inotify` and `Fanotify` own their descriptor and
        // never close or replace it while the AsyncFd owns them.
        let inotify = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) }
            .map_err(|e| WatchError::Register(e.into()))?;
        let fanotify = fanotify.and_then(|group| {
            unsafe { AsyncFd::register_with_interest(group, Interest::READABLE) }
                .map_err(io::Error::from)
                .inspect_err(
                    |e| warn!(error = %e, "cannot poll fanotify: writers will not be attributed"),
                )
                .ok()
        });
        let pending = Pending::new(core.options.settle, core.options.max_delay);
        Session {
            core,
            inotify,
            fanotify,
            pending,
            recent: Recent::new(ATTRIBUTION_WINDOW),
            buf: vec![0; EVENT_BUFFER],
            tx,
            fanotify_overflowed: false,
        }
        .run(shutdown)
        .await
    }
}

/// A running watcher: the kernel queues registered with tokio, and what is
/// waiting to be hashed or attributed.
pub(super) struct Session {
    pub(super) core: Core,
    pub(super) inotify: AsyncFd<Inotify>,
    pub(super) fanotify: Option<AsyncFd<Fanotify>>,
    pub(super) pending: Pending,
    pub(super) recent: Recent,
    /// One read(2) of either queue.
    pub(super) buf: Vec<u8>,
    pub(super) tx: mpsc::Sender<FileChange>,
    /// Whether the fanotify overflow was logged already.
    pub(super) fanotify_overflowed: bool,
}

pub(super) fn kernel<'a>(
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

impl Session {
    async fn run(mut self, shutdown: CancellationToken) -> Result<(), WatchError> {
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
                    let n = match guard.try_io(|fd| inotify::read(fd.as_raw_fd(), &mut self.buf)) {
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

    fn drain_inotify(&mut self) -> Result<(), WatchError> {
        loop {
            match inotify::read(self.inotify.as_raw_fd(), &mut self.buf) {
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
}

//! Writers: reading fanotify's reports and resolving each writing process
//! through /proc at once, before it can exit.

use std::{collections::HashMap, ffi::OsString, io, time::Instant};

use tracing::warn;

use super::{
    Writer,
    fanotify::{self, Mode, Target},
    procfs,
    run::Session,
};

impl Session {
    pub(super) fn on_fanotify_read(&mut self, result: io::Result<Vec<fanotify::Event>>) {
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
    pub(super) fn drain_fanotify(&mut self) {
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
}

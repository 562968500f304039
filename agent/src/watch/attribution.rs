//! The most recent writers the kernel reported, kept for a short window so
//! the change inotify reports (after the settle time) can be tied to them.

use std::{
    collections::HashMap,
    ffi::OsString,
    time::{Duration, Instant},
};

use super::{Evidence, Writer, dirs::Location};

#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    writer: Writer,
}

/// Recent writers: per watched entry, and per directory for other entries
/// (the temporary files editors rename over the watched one).
#[derive(Debug)]
pub(crate) struct Recent {
    window: Duration,
    by_name: HashMap<(usize, OsString), Seen>,
    by_dir: HashMap<usize, Seen>,
}

impl Recent {
    /// Writers older than `window` are forgotten.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            by_name: HashMap::new(),
            by_dir: HashMap::new(),
        }
    }

    /// The kernel reported `writer` acting on `name` in `dir` at `at`.
    /// `watched`: whether that entry is a watched path's location; other
    /// entries only count as the directory's latest writer.
    pub(crate) fn record(
        &mut self,
        dir: usize,
        name: OsString,
        watched: bool,
        at: Instant,
        writer: Writer,
    ) {
        self.prune(at);
        let seen = Seen { at, writer };
        if watched {
            self.by_name.insert((dir, name), seen);
        } else {
            self.by_dir.insert(dir, seen);
        }
    }

    /// Removes the writers recorded for these locations and returns the most
    /// recent one still within the window (evidence [`Evidence::Path`]).
    pub(crate) fn take(&mut self, locations: &[Location], now: Instant) -> Option<Writer> {
        self.prune(now);
        locations
            .iter()
            .filter_map(|l| self.by_name.remove(&(l.dir, l.name.clone())))
            .max_by_key(|s| s.at)
            .map(|s| s.writer)
    }

    /// The most recent writer of another entry in these locations'
    /// directories, within the window (evidence [`Evidence::Directory`]).
    pub(crate) fn peek_directory(&self, locations: &[Location], now: Instant) -> Option<Writer> {
        locations
            .iter()
            .filter_map(|l| self.by_dir.get(&l.dir))
            .filter(|s| self.fresh(s, now))
            .max_by_key(|s| s.at)
            .map(|s| Writer {
                evidence: Evidence::Directory,
                ..s.writer.clone()
            })
    }

    /// Forgets the directory writers of these locations (once used).
    pub(crate) fn forget_directory(&mut self, locations: &[Location]) {
        for l in locations {
            self.by_dir.remove(&l.dir);
        }
    }

    fn fresh(&self, seen: &Seen, now: Instant) -> bool {
        now.saturating_duration_since(seen.at) <= self.window
    }

    fn prune(&mut self, now: Instant) {
        let window = self.window;
        let keep = |s: &Seen| now.saturating_duration_since(s.at) <= window;
        self.by_name.retain(|_, s| keep(s));
        self.by_dir.retain(|_, s| keep(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn w(pid: u32) -> Writer {
        Writer {
            pid,
            process_name: Some("sh".into()),
            executable: None,
            uid: Some(0),
            user_name: None,
            evidence: Evidence::Path,
        }
    }

    fn loc(dir: usize, name: &str) -> Location {
        Location {
            dir,
            name: name.into(),
        }
    }

    #[test]
    fn the_latest_writer_of_the_entry_wins_once() {
        let t0 = Instant::now();
        let mut r = Recent::new(5 * S);
        r.record(0, "f".into(), true, t0, w(1));
        r.record(0, "f".into(), true, t0 + S, w(2));
        r.record(0, "g".into(), true, t0 + 2 * S, w(3));
        let f = [loc(0, "f")];
        assert_eq!(r.take(&f, t0 + 2 * S).map(|w| w.pid), Some(2));
        assert_eq!(r.take(&f, t0 + 2 * S), None, "consumed");
        assert_eq!(r.take(&[loc(0, "g")], t0 + 2 * S).map(|w| w.pid), Some(3));
    }

    #[test]
    fn a_symlink_target_entry_counts_too() {
        let t0 = Instant::now();
        let mut r = Recent::new(5 * S);
        r.record(1, "real".into(), true, t0, w(7));
        r.record(0, "link".into(), true, t0 + S, w(8));
        let both = [loc(0, "link"), loc(1, "real")];
        assert_eq!(r.take(&both, t0 + S).map(|w| w.pid), Some(8));
        assert_eq!(r.take(&both, t0 + S), None, "both consumed");
    }

    #[test]
    fn old_writers_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Recent::new(5 * S);
        r.record(0, "f".into(), true, t0, w(1));
        r.record(0, ".tmp".into(), false, t0, w(2));
        let f = [loc(0, "f")];
        assert!(r.peek_directory(&f, t0 + 6 * S).is_none());
        assert_eq!(r.take(&f, t0 + 6 * S), None);
    }

    #[test]
    fn directory_writers_are_inferred_and_marked_as_such() {
        let t0 = Instant::now();
        let mut r = Recent::new(5 * S);
        r.record(0, ".sedAbc".into(), false, t0, w(4));
        let f = [loc(0, "f")];
        assert_eq!(r.take(&f, t0), None, "not a write to f itself");
        let inferred = r.peek_directory(&f, t0).unwrap();
        assert_eq!((inferred.pid, inferred.evidence), (4, Evidence::Directory));
        assert!(
            r.peek_directory(&[loc(1, "f")], t0).is_none(),
            "other directory"
        );
        r.forget_directory(&f);
        assert!(r.peek_directory(&f, t0).is_none());
    }
}

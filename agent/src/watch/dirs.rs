//! The watched paths and the directories watched for them, and which paths
//! an event on a directory entry concerns. Pure bookkeeping: the syscalls
//! that fill it in are the watcher's.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
};

use rustix::fs::inotify::ReadFlags;

use super::{fanotify::DirId, inotify};

/// Where a watched path's content lives: an entry of a watched directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// Index into [`Registry::dirs`].
    pub(crate) dir: usize,
    pub(crate) name: OsString,
}

/// How fanotify events name this directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum FanIdentity {
    /// Not marked; the reason is reported in `Startup::unattributed`.
    #[default]
    None,
    /// File handle (names mode).
    Handle(DirId),
    /// Canonical path (descriptors mode).
    Path(PathBuf),
}

/// A watched directory.
#[derive(Clone, Debug)]
pub(crate) struct Dir {
    /// The path it was watched by.
    pub(crate) path: PathBuf,
    /// inotify watch descriptor; `None` once the directory was deleted or
    /// moved away (the watcher retries it).
    pub(crate) wd: Option<i32>,
    /// `path` with every symbolic link resolved when it was watched: when
    /// that changes (a symlinked directory re-pointed), the watch is on the
    /// wrong directory and is renewed.
    pub(crate) resolved: Option<PathBuf>,
    pub(crate) fan: FanIdentity,
    /// Why writers in it cannot be attributed, if they cannot.
    pub(crate) unattributed: Option<String>,
}

/// A watched path.
#[derive(Clone, Debug)]
pub(crate) struct Watched {
    pub(crate) path: PathBuf,
    /// The path's own entry first; then, when it is a symbolic link, the
    /// entry of its final target (a change of the target's content shows up
    /// only there).
    pub(crate) locations: Vec<Location>,
}

/// What an inotify event calls for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// The queue overflowed and events were lost: re-hash every path.
    RehashAll,
    /// Re-hash these paths. `drop_watch`: the directory moved, and the watch
    /// would follow it to its new name; drop it (IN_IGNORED follows).
    Rehash { paths: Vec<usize>, drop_watch: bool },
    /// The watch is gone (directory deleted, moved or unmounted): forget
    /// the descriptor, re-hash the directory's paths, and retry.
    Lost,
}

/// Every watched path and directory.
#[derive(Clone, Debug, Default)]
pub(crate) struct Registry {
    pub(crate) dirs: Vec<Dir>,
    pub(crate) paths: Vec<Watched>,
}

impl Registry {
    /// The live directory holding this inotify watch, if any.
    pub(crate) fn dir_with_wd(&self, wd: i32) -> Option<usize> {
        self.dirs.iter().position(|d| d.wd == Some(wd))
    }

    /// Paths with an entry called `name` in a directory watched as `wd`; an
    /// empty name (an event on the directory itself) concerns all of them.
    pub(crate) fn affected(&self, wd: i32, name: &OsStr) -> Vec<usize> {
        let dirs: Vec<usize> = (0..self.dirs.len())
            .filter(|&d| self.dirs[d].wd == Some(wd))
            .collect();
        self.matching(|l| dirs.contains(&l.dir) && (name.is_empty() || l.name == name))
    }

    /// What `event` calls for.
    pub(crate) fn effect(&self, event: &inotify::Event) -> Effect {
        let mask = ReadFlags::from_bits_retain(event.mask);
        if mask.contains(ReadFlags::QUEUE_OVERFLOW) {
            Effect::RehashAll
        } else if mask.contains(ReadFlags::IGNORED) {
            Effect::Lost
        } else {
            Effect::Rehash {
                paths: self.affected(event.wd, &event.name),
                drop_watch: mask.contains(ReadFlags::MOVE_SELF),
            }
        }
    }

    /// Paths with an entry in directory `dir`.
    pub(crate) fn in_dir(&self, dir: usize) -> Vec<usize> {
        self.matching(|l| l.dir == dir)
    }

    fn matching(&self, pred: impl Fn(&Location) -> bool) -> Vec<usize> {
        (0..self.paths.len())
            .filter(|&i| self.paths[i].locations.iter().any(&pred))
            .collect()
    }

    /// Directories fanotify names by this handle.
    pub(crate) fn dirs_by_handle(&self, id: &DirId) -> Vec<usize> {
        self.dirs_where(|f| matches!(f, FanIdentity::Handle(h) if h == id))
    }

    /// Directories whose canonical path is `path`.
    pub(crate) fn dirs_by_path(&self, path: &Path) -> Vec<usize> {
        self.dirs_where(|f| matches!(f, FanIdentity::Path(p) if p == path))
    }

    fn dirs_where(&self, pred: impl Fn(&FanIdentity) -> bool) -> Vec<usize> {
        (0..self.dirs.len())
            .filter(|&d| self.dirs[d].wd.is_some() && pred(&self.dirs[d].fan))
            .collect()
    }

    /// Whether `name` in `dir` is where a watched path lives.
    pub(crate) fn is_watched(&self, dir: usize, name: &OsStr) -> bool {
        self.paths
            .iter()
            .flat_map(|p| &p.locations)
            .any(|l| l.dir == dir && l.name == name)
    }

    /// Directories lost (deleted or moved away) and not yet watched again.
    pub(crate) fn lost(&self) -> Vec<usize> {
        (0..self.dirs.len())
            .filter(|&d| self.dirs[d].wd.is_none())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str, wd: i32, fan: FanIdentity) -> Dir {
        Dir {
            path: path.into(),
            wd: Some(wd),
            resolved: Some(path.into()),
            fan,
            unattributed: None,
        }
    }

    fn event(wd: i32, mask: u32, name: &str) -> inotify::Event {
        inotify::Event {
            wd,
            mask,
            name: name.into(),
        }
    }

    fn loc(dir: usize, name: &str) -> Location {
        Location {
            dir,
            name: name.into(),
        }
    }

    fn registry() -> Registry {
        let handle = DirId {
            fsid: [1, 2],
            handle_type: 1,
            handle: vec![9; 8],
        };
        Registry {
            dirs: vec![
                dir("/etc/haproxy", 1, FanIdentity::Handle(handle)),
                dir("/srv/cfg", 2, FanIdentity::Path("/srv/cfg".into())),
            ],
            paths: vec![
                Watched {
                    path: "/etc/haproxy/haproxy.cfg".into(),
                    locations: vec![loc(0, "haproxy.cfg")],
                },
                Watched {
                    path: "/etc/haproxy/maps.cfg".into(),
                    // A symbolic link to /srv/cfg/maps.real.
                    locations: vec![loc(0, "maps.cfg"), loc(1, "maps.real")],
                },
            ],
        }
    }

    #[test]
    fn events_concern_paths_by_directory_and_name() {
        let r = registry();
        assert_eq!(r.affected(1, OsStr::new("haproxy.cfg")), vec![0]);
        assert_eq!(r.affected(1, OsStr::new("maps.cfg")), vec![1]);
        assert_eq!(r.affected(2, OsStr::new("maps.real")), vec![1]);
        assert!(r.affected(1, OsStr::new(".haproxy.cfg.swp")).is_empty());
        assert!(r.affected(2, OsStr::new("haproxy.cfg")).is_empty());
        assert!(r.affected(7, OsStr::new("haproxy.cfg")).is_empty());
        assert_eq!(r.affected(1, OsStr::new("")), vec![0, 1]);
        assert_eq!(r.in_dir(1), vec![1]);
    }

    #[test]
    fn fanotify_identities_map_back_to_directories() {
        let mut r = registry();
        let handle = DirId {
            fsid: [1, 2],
            handle_type: 1,
            handle: vec![9; 8],
        };
        assert_eq!(r.dirs_by_handle(&handle), vec![0]);
        assert_eq!(r.dirs_by_path(Path::new("/srv/cfg")), vec![1]);
        assert!(r.dirs_by_path(Path::new("/etc/haproxy")).is_empty());
        assert!(r.is_watched(1, OsStr::new("maps.real")));
        assert!(!r.is_watched(0, OsStr::new("maps.real")));
        // A lost directory matches nothing until it is watched again.
        r.dirs[0].wd = None;
        assert!(r.dirs_by_handle(&handle).is_empty());
        assert!(r.affected(1, OsStr::new("haproxy.cfg")).is_empty());
        assert_eq!(r.lost(), vec![0]);
        assert_eq!(r.dir_with_wd(2), Some(1));
        assert_eq!(r.dir_with_wd(1), None);
    }

    #[test]
    fn each_event_calls_for_the_right_effect() {
        let r = registry();
        assert_eq!(
            r.effect(&event(1, libc::IN_CLOSE_WRITE, "haproxy.cfg")),
            Effect::Rehash {
                paths: vec![0],
                drop_watch: false
            }
        );
        assert_eq!(
            r.effect(&event(1, libc::IN_MOVED_TO, "unrelated")),
            Effect::Rehash {
                paths: vec![],
                drop_watch: false
            }
        );
        assert_eq!(
            r.effect(&event(-1, libc::IN_Q_OVERFLOW, "")),
            Effect::RehashAll
        );
        assert_eq!(
            r.effect(&event(1, libc::IN_MOVE_SELF, "")),
            Effect::Rehash {
                paths: vec![0, 1],
                drop_watch: true
            }
        );
        assert_eq!(
            r.effect(&event(2, libc::IN_DELETE_SELF, "")),
            Effect::Rehash {
                paths: vec![1],
                drop_watch: false
            }
        );
        assert_eq!(r.effect(&event(2, libc::IN_IGNORED, "")), Effect::Lost);
    }
}

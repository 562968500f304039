//! A thin inotify(7) wrapper: directory watches and a pure event parser.
//!
//! Watching the parent directory rather than the file is what makes
//! rename-over (vim, `sed -i`, ansible) and delete-then-recreate visible: a
//! watch on the file itself follows the old inode away.

use std::{
    ffi::{OsStr, OsString},
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use rustix::fs::inotify::{self as sys, CreateFlags, WatchFlags};

/// Events that can change what is at a name in the directory, plus the
/// directory itself going away. IN_MODIFY covers writers that keep the file
/// open and truncate(2) by path, which never close; IN_ATTRIB covers link
/// count and permission changes. IN_EXCL_UNLINK: writes to an already
/// unlinked file concern no name.
pub(crate) const DIR_MASK: WatchFlags = WatchFlags::CLOSE_WRITE
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::CREATE)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::EXCL_UNLINK);

/// An inotify instance (non-blocking, close-on-exec).
#[derive(Debug)]
pub(crate) struct Inotify(OwnedFd);

impl Inotify {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self(sys::init(
            CreateFlags::NONBLOCK | CreateFlags::CLOEXEC,
        )?))
    }

    /// Watches a directory; returns the watch descriptor (the same one when
    /// the directory, by any name, is already watched).
    pub(crate) fn add_dir(&self, dir: &Path) -> io::Result<i32> {
        Ok(sys::add_watch(&self.0, dir, DIR_MASK)?)
    }

    /// Drops a watch; the kernel then queues IN_IGNORED for it.
    pub(crate) fn remove(&self, wd: i32) {
        // An unknown wd only yields EINVAL: nothing to undo.
        let _ = sys::remove_watch(&self.0, wd);
    }

    /// Reads what is queued into `buf` (EAGAIN as `WouldBlock`).
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        read(self, buf)
    }
}

impl AsFd for Inotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// One read(2) of a notification queue, inotify's or fanotify's, into
/// `buf` (EAGAIN as `WouldBlock`).
pub(crate) fn read(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::io::read(fd, buf)?)
}

/// One inotify event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// Watch descriptor; -1 for IN_Q_OVERFLOW.
    pub(crate) wd: i32,
    pub(crate) mask: u32,
    /// Entry name inside the watched directory; empty for events on the
    /// directory itself.
    pub(crate) name: OsString,
}

/// Size of `struct inotify_event` before the name.
const HEADER: usize = 16;

/// Parses the events of one read(2). The kernel only returns whole events;
/// a truncated tail is ignored.
pub(crate) fn parse(buf: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut rest = buf;
    while rest.len() >= HEADER {
        let word = |i: usize| u32::from_ne_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
        let len = word(12) as usize;
        let Some(name) = rest.get(HEADER..HEADER + len) else {
            break;
        };
        // The name is NUL-padded to an alignment boundary.
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        events.push(Event {
            wd: word(0) as i32,
            mask: word(4),
            name: OsStr::from_bytes(name).to_owned(),
        });
        rest = &rest[HEADER + len..];
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(wd: i32, mask: u32, name: &[u8], padded: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&wd.to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&(padded as u32).to_ne_bytes());
        let mut n = name.to_vec();
        n.resize(padded, 0);
        v.extend_from_slice(&n);
        v
    }

    #[test]
    fn parses_consecutive_events_with_padding() {
        let mut buf = raw(3, libc::IN_CLOSE_WRITE, b"haproxy.cfg", 16);
        buf.extend(raw(-1, libc::IN_Q_OVERFLOW, b"", 0));
        buf.extend(raw(3, libc::IN_DELETE_SELF, b"", 0));
        buf.extend(raw(4, libc::IN_MOVED_TO, b"\xffodd", 8));
        let events = parse(&buf);
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].wd, 3);
        assert_eq!(events[0].mask, libc::IN_CLOSE_WRITE);
        assert_eq!(events[0].name, "haproxy.cfg");
        assert_eq!(events[1].wd, -1);
        assert!(events[1].name.is_empty());
        assert!(events[2].name.is_empty());
        assert_eq!(events[3].name.as_bytes(), b"\xffodd");
    }

    #[test]
    fn ignores_a_truncated_tail() {
        let mut buf = raw(1, libc::IN_CREATE, b"a", 4);
        let second = raw(1, libc::IN_CREATE, b"b", 4);
        buf.extend_from_slice(&second[..18]);
        assert_eq!(parse(&buf).len(), 1);
        assert!(parse(&buf[..10]).is_empty());
    }

    #[test]
    fn sees_a_real_close_write() {
        let dir = std::env::temp_dir().join(format!("lbwitness-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ino = Inotify::new().unwrap();
        let wd = ino.add_dir(&dir).unwrap();
        assert_eq!(ino.add_dir(&dir).unwrap(), wd, "same directory, same wd");
        std::fs::write(dir.join("f"), b"x").unwrap();
        let mut buf = vec![0u8; 4096];
        let n = ino.read(&mut buf).unwrap();
        let events = parse(&buf[..n]);
        assert!(
            events
                .iter()
                .any(|e| e.wd == wd && e.name == "f" && e.mask & libc::IN_CLOSE_WRITE != 0),
            "{events:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let err = ino.add_dir(&dir.join("f")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}

//! A thin fanotify(7) wrapper: who wrote, created, renamed or deleted a name
//! in a watched directory. Unlike inotify, every fanotify event carries the
//! pid of the process that caused it.
//!
//! Two modes:
//! - [`Mode::Names`] (`FAN_REPORT_DFID_NAME`, Linux 5.9+): each event names
//!   the directory (by file handle) and the entry, and directory-entry events
//!   (create, delete, rename) are reported too, so a rename over the watched
//!   file is tied to the process that renamed.
//! - [`Mode::Descriptors`] (any kernel with fanotify): only writes, each with
//!   an open descriptor of the written file whose path we read back.
//!
//! Both need CAP_SYS_ADMIN (a `FAN_CLASS_NOTIF` group reporting pids of other
//! processes).

use std::{
    ffi::{CString, OsStr, OsString},
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

/// `AT_HANDLE_FID` (Linux 6.5+): ask name_to_handle_at(2) for the handle
/// encoding fanotify uses, also on filesystems that cannot be NFS-exported.
const AT_HANDLE_FID: libc::c_int = 0x200;
/// `MAX_HANDLE_SZ` from linux/exportfs.h.
const MAX_HANDLE_SZ: usize = 128;
/// `sizeof(struct fanotify_event_metadata)`.
const METADATA: usize = 24;

/// What the fanotify group reports; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Directory handle and entry name, for writes and directory entries.
    Names,
    /// A descriptor of the written file, for writes only.
    Descriptors,
}

impl Mode {
    fn init_flags(self) -> libc::c_uint {
        let base = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        match self {
            Self::Names => base | libc::FAN_REPORT_DFID_NAME,
            Self::Descriptors => base,
        }
    }

    fn mark_mask(self) -> u64 {
        let writes = libc::FAN_CLOSE_WRITE | libc::FAN_MODIFY | libc::FAN_EVENT_ON_CHILD;
        match self {
            // FAN_ONDIR: a directory created or removed in the file's place.
            Self::Names => {
                writes
                    | libc::FAN_CREATE
                    | libc::FAN_DELETE
                    | libc::FAN_MOVED_FROM
                    | libc::FAN_MOVED_TO
                    | libc::FAN_ONDIR
            }
            Self::Descriptors => writes,
        }
    }
}

/// A fanotify notification group (non-blocking, close-on-exec).
#[derive(Debug)]
pub(crate) struct Fanotify {
    fd: OwnedFd,
    mode: Mode,
}

impl Fanotify {
    pub(crate) fn new(mode: Mode) -> io::Result<Self> {
        // Descriptors of written files are opened read-only, close-on-exec.
        let event_flags = (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_uint;
        // SAFETY: no pointers.
        let fd = unsafe { libc::fanotify_init(mode.init_flags(), event_flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, mode })
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Reports events on `dir`'s entries. Fails in [`Mode::Names`] on
    /// filesystems that cannot encode file handles (ENODEV, EOPNOTSUPP,
    /// EXDEV).
    pub(crate) fn mark_dir(&self, dir: &Path) -> io::Result<()> {
        let c = c_path(dir)?;
        // SAFETY: a valid NUL-terminated path; AT_FDCWD for absolute paths.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_ONLYDIR,
                self.mode.mark_mask(),
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl AsFd for Fanotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Fanotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A path as a C string; paths with NUL bytes cannot exist on Linux.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A directory as fanotify names it: filesystem id and file handle.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DirId {
    pub(crate) fsid: [i32; 2],
    pub(crate) handle_type: i32,
    pub(crate) handle: Vec<u8>,
}

#[repr(C)]
struct FileHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// The identity [`Mode::Names`] events will carry for `dir`.
pub(crate) fn dir_id(dir: &Path) -> io::Result<DirId> {
    let c = c_path(dir)?;
    let mut fh = FileHandle {
        handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id = 0;
    let mut encode = |flags| {
        fh.handle_bytes = MAX_HANDLE_SZ as libc::c_uint;
        // SAFETY: `fh` is a file_handle with room for MAX_HANDLE_SZ bytes.
        let rc = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                c.as_ptr(),
                (&raw mut fh).cast(),
                &raw mut mount_id,
                flags | libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // Kernels before 6.5 refuse AT_HANDLE_FID; their fanotify uses the
    // ordinary encoding.
    match encode(AT_HANDLE_FID) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => encode(0)?,
        other => other?,
    }
    // statvfs packs statfs's two-int f_fsid as `val[0] | val[1] << 32`
    // (rustix's own conversion, each half taken as u32).
    let packed = rustix::fs::statvfs(dir)?.f_fsid;
    let fsid = [packed as u32 as i32, (packed >> 32) as u32 as i32];
    let len = (fh.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok(DirId {
        fsid,
        handle_type: fh.handle_type,
        handle: fh.f_handle[..len].to_vec(),
    })
}

/// One event as read, before its descriptor is taken over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawEvent {
    pub(crate) mask: u64,
    pub(crate) pid: i32,
    /// A descriptor the kernel opened for us ([`Mode::Descriptors`]), or
    /// `FAN_NOFD`.
    pub(crate) fd: RawFd,
    /// The directory and entry name ([`Mode::Names`]).
    pub(crate) name: Option<(DirId, OsString)>,
}

/// Parses the events of one read(2). Pure: descriptors are returned as
/// numbers and must all be closed by the caller.
pub(crate) fn parse(buf: &[u8]) -> Vec<RawEvent> {
    let mut events = Vec::new();
    let mut rest = buf;
    while rest.len() >= METADATA {
        let event_len = u32_at(rest, 0) as usize;
        let metadata_len = usize::from(u16::from_ne_bytes([rest[6], rest[7]]));
        if event_len < METADATA || event_len > rest.len() {
            break;
        }
        let event = &rest[..event_len];
        let mut name = None;
        let mut info = event.get(metadata_len.max(METADATA)..).unwrap_or_default();
        while info.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([info[2], info[3]]));
            if len < 4 || len > info.len() {
                break;
            }
            if info[0] == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
                name = parse_dfid_name(&info[..len]);
            }
            info = &info[len..];
        }
        events.push(RawEvent {
            mask: u64::from_ne_bytes(rest[8..16].try_into().expect("8 bytes")),
            fd: u32_at(rest, 16) as i32,
            pid: u32_at(rest, 20) as i32,
            name,
        });
        rest = &rest[event_len..];
    }
    events
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

/// `struct fanotify_event_info_fid` of type DFID_NAME: header (4), fsid (8),
/// `struct file_handle` (8 + handle_bytes), then the NUL-terminated name.
fn parse_dfid_name(record: &[u8]) -> Option<(DirId, OsString)> {
    let fsid = [
        u32_at(record.get(..12)?, 4) as i32,
        u32_at(record, 8) as i32,
    ];
    let handle_bytes = u32_at(record.get(..20)?, 12) as usize;
    let handle_type = u32_at(record, 16) as i32;
    let handle = record.get(20..20 + handle_bytes)?.to_vec();
    let name = &record[20 + handle_bytes..];
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    Some((
        DirId {
            fsid,
            handle_type,
            handle,
        },
        OsStr::from_bytes(name).to_owned(),
    ))
}

/// What an event is about.
#[derive(Debug)]
pub(crate) enum Target {
    /// An entry of a watched directory ([`Mode::Names`]).
    Name(DirId, OsString),
    /// The written file's path as the kernel resolves it now
    /// ([`Mode::Descriptors`]).
    Path(PathBuf),
    /// Neither (queue overflow, or a descriptor whose path is unreadable).
    Unknown,
}

/// An event with its descriptor already closed.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) mask: u64,
    pub(crate) pid: i32,
    pub(crate) target: Target,
}

/// Reads and parses what is queued (EAGAIN as `WouldBlock`), closing every
/// descriptor the kernel opened for us.
pub(crate) fn read(group: &Fanotify, buf: &mut [u8]) -> io::Result<Vec<Event>> {
    let n = super::inotify::read(group, buf)?;
    let raw = parse(&buf[..n]);
    // Take ownership of every descriptor first, so none leaks.
    let owned: Vec<_> = raw
        .iter()
        // SAFETY: the kernel installed these descriptors for us, once each.
        .map(|ev| (ev.fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(ev.fd) }))
        .collect();
    Ok(raw
        .into_iter()
        .zip(owned)
        .map(|(ev, fd)| {
            let target = match (ev.name, fd) {
                (Some((dir, name)), _) => Target::Name(dir, name),
                (None, Some(fd)) => fd_path(&fd).map_or(Target::Unknown, Target::Path),
                (None, None) => Target::Unknown,
            };
            Event {
                mask: ev.mask,
                pid: ev.pid,
                target,
            }
        })
        .collect())
}

fn fd_path(fd: &OwnedFd) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    // The kernel appends this when the file was unlinked since.
    let bytes = link.as_os_str().as_bytes();
    let bytes = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
    Some(PathBuf::from(OsStr::from_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(total: usize, mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(total as u32).to_ne_bytes());
        v.push(libc::FANOTIFY_METADATA_VERSION);
        v.push(0);
        v.extend_from_slice(&(METADATA as u16).to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&fd.to_ne_bytes());
        v.extend_from_slice(&pid.to_ne_bytes());
        v
    }

    fn dfid_name(handle: &[u8], name: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&7i32.to_ne_bytes());
        body.extend_from_slice(&9i32.to_ne_bytes());
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes());
        body.extend_from_slice(handle);
        body.extend_from_slice(name);
        body.push(0);
        while (body.len() + 4) % 4 != 0 {
            body.push(0);
        }
        let mut v = vec![libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0];
        v.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
        v.extend(body);
        v
    }

    #[test]
    fn parses_name_events_and_descriptor_events() {
        let info = dfid_name(&[1, 2, 3, 4, 5, 6, 7, 8], b"haproxy.cfg");
        let mut buf = metadata(METADATA + info.len(), libc::FAN_MOVED_TO, -1, 42);
        buf.extend(info);
        buf.extend(metadata(METADATA, libc::FAN_CLOSE_WRITE, 17, 43));
        let events = parse(&buf);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].pid, 42);
        assert_eq!(events[0].mask, libc::FAN_MOVED_TO);
        assert_eq!(events[0].fd, libc::FAN_NOFD);
        let (dir, name) = events[0].name.clone().unwrap();
        assert_eq!(name, "haproxy.cfg");
        assert_eq!(
            dir,
            DirId {
                fsid: [7, 9],
                handle_type: 1,
                handle: vec![1, 2, 3, 4, 5, 6, 7, 8]
            }
        );
        assert_eq!(events[1].fd, 17);
        assert_eq!(events[1].pid, 43);
        assert!(events[1].name.is_none());
    }

    #[test]
    fn survives_malformed_input() {
        let mut buf = metadata(METADATA + 8, libc::FAN_MODIFY, -1, 1);
        // An info record whose length runs past the event.
        buf.extend_from_slice(&[libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 200, 0, 0, 0, 0, 0]);
        let events = parse(&buf);
        assert_eq!(events.len(), 1);
        assert!(events[0].name.is_none());
        // A handle length running past the record.
        let mut info = dfid_name(&[1; 8], b"x");
        info[12] = 100;
        let mut buf = metadata(METADATA + info.len(), libc::FAN_MODIFY, -1, 1);
        buf.extend(info);
        assert!(parse(&buf)[0].name.is_none());
        // An event claiming more bytes than were read, or fewer than a header.
        assert!(parse(&metadata(1000, 0, -1, 1)).is_empty());
        assert!(parse(&metadata(3, 0, -1, 1)).is_empty());
        assert!(parse(&[0; 10]).is_empty());
    }
}

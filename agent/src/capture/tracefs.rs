//! Finding (or mounting) tracefs, and reading a tracepoint's id and format.
//!
//! tracefs is not mounted by default on every host, and `ip netns exec`
//! mounts a fresh /sys, where /sys/kernel/tracing is an empty directory. So
//! the agent looks for a tracefs mount in /proc/self/mountinfo and, when
//! there is none, mounts one itself: at /sys/kernel/tracing when that is an
//! empty directory of a sysfs (where every tool looks), else at a private
//! [`PRIVATE_MOUNT`]. This happens before anything reads a tracepoint's id
//! or format. (aya's `TracePoint::attach` only looks at two fixed paths and
//! caches the first answer for the life of the process, so the request
//! loader attaches tracepoints by the id read here instead.)
//!
//! The parsers ([`tracefs_mounts`], [`Format::parse`], [`Format::check`])
//! are pure and tested on real texts of this kernel.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use agent_common::request::layout::Field;

/// Where tracefs is mounted when /sys/kernel/tracing cannot take it.
pub const PRIVATE_MOUNT: &str = "/run/lbwitness/tracefs";
const SYS_TRACING: &str = "/sys/kernel/tracing";

/// Why tracefs or a tracepoint could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TracefsError {
    /// No tracefs mount and mounting one failed.
    #[error(
        "tracefs is not mounted and mounting it at {path} failed: {reason}; mount it \
         (`mount -t tracefs nodev /sys/kernel/tracing`) or run the agent with CAP_SYS_ADMIN"
    )]
    Mount {
        /// Where the mount was tried.
        path: String,
        /// The kernel's error.
        reason: String,
    },
    /// The tracepoint does not exist in this kernel, or its files are unreadable.
    #[error("tracepoint {category}:{name} is not available ({reason})")]
    Missing {
        /// tracefs category.
        category: String,
        /// Event name.
        name: String,
        /// The error reading its files.
        reason: String,
    },
    /// The format file could not be parsed.
    #[error("the format of {category}:{name} could not be parsed: {reason}")]
    BadFormat {
        /// tracefs category.
        category: String,
        /// Event name.
        name: String,
        /// What was wrong.
        reason: String,
    },
}

/// One field of a tracepoint format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    /// Field name (without array brackets).
    pub name: String,
    /// Byte offset in the record.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// A tracepoint's record layout, from its `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    fields: Vec<FormatField>,
}

/// How a format differs from what a program reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// A field the program reads is absent.
    #[error("field `{0}` is missing")]
    Missing(String),
    /// A field moved or changed size.
    #[error(
        "field `{name}` is at offset {offset} size {size}, the program reads {want_offset}/{want_size}"
    )]
    Moved {
        /// The field.
        name: String,
        /// Offset in this kernel.
        offset: usize,
        /// Size in this kernel.
        size: usize,
        /// Offset the program reads.
        want_offset: usize,
        /// Size the program reads.
        want_size: usize,
    },
    /// No 8-byte field where a syscall argument should be.
    #[error("no 8-byte syscall argument at offset {0}")]
    NoArgument(usize),
}

impl Format {
    /// Parses a tracefs `format` file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.trim().parse::<usize>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.trim().parse::<usize>().ok();
                } else if decl.is_none() && !part.contains(':') {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                return Err(format!("malformed field line `{line}`"));
            };
            let last = decl
                .split_whitespace()
                .last()
                .ok_or_else(|| format!("field without a name in `{line}`"))?;
            let name = last
                .split('[')
                .next()
                .unwrap_or(last)
                .trim_start_matches('*');
            if name.is_empty() {
                return Err(format!("field without a name in `{line}`"));
            }
            fields.push(FormatField {
                name: name.to_owned(),
                offset,
                size,
            });
        }
        if fields.is_empty() {
            return Err("no fields".to_owned());
        }
        Ok(Self { fields })
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FormatField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Every field, in file order.
    pub fn fields(&self) -> &[FormatField] {
        &self.fields
    }

    /// Checks that every field in `expected` is where the program reads it.
    pub fn check(&self, expected: &[Field]) -> Result<(), Mismatch> {
        for want in expected {
            let got = self
                .field(want.name)
                .ok_or_else(|| Mismatch::Missing(want.name.to_owned()))?;
            if got.offset != want.offset || got.size != want.size {
                return Err(Mismatch::Moved {
                    name: want.name.to_owned(),
                    offset: got.offset,
                    size: got.size,
                    want_offset: want.offset,
                    want_size: want.size,
                });
            }
        }
        Ok(())
    }

    /// Checks that a `sys_enter_*` record has 8-byte arguments at `offsets`
    /// (their names differ from syscall to syscall).
    pub fn check_arguments(&self, offsets: &[usize]) -> Result<(), Mismatch> {
        for &at in offsets {
            if !self.fields.iter().any(|f| f.offset == at && f.size == 8) {
                return Err(Mismatch::NoArgument(at));
            }
        }
        Ok(())
    }
}

/// Decodes the octal escapes (`\040` for a space) of a mountinfo path.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        if bytes[i] == b'\\'
            && let Some(v) = octal
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One mount of /proc/self/mountinfo: mount point and filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount point.
    pub point: PathBuf,
    /// Filesystem type.
    pub fstype: String,
}

/// Every mount in a mountinfo text, in order (later mounts hide earlier
/// ones at the same point). Malformed lines are skipped.
pub fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// The tracefs mount points in a mountinfo text, in order.
pub fn tracefs_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mounts(mountinfo)
        .into_iter()
        .filter(|m| m.fstype == "tracefs")
        .map(|m| m.point)
        .collect()
}

/// The filesystem type `path` lives on: the last mount whose point is the
/// longest prefix of it.
pub fn fstype_of<'a>(all: &'a [Mount], path: &Path) -> Option<&'a str> {
    all.iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count())
        .map(|m| m.fstype.as_str())
}

/// The mounted tracefs root, mounting one when there is none. The answer is
/// kept for the life of the process (mount namespaces do not change under
/// a running agent).
pub fn root() -> Result<&'static Path, TracefsError> {
    static ROOT: OnceLock<Result<PathBuf, TracefsError>> = OnceLock::new();
    ROOT.get_or_init(locate)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

fn locate() -> Result<PathBuf, TracefsError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(found) = tracefs_mounts(&info)
        .into_iter()
        .rev()
        .find(|p| p.join("events").is_dir())
    {
        return Ok(found);
    }
    let all = mounts(&info);
    let sys = Path::new(SYS_TRACING);
    let empty = std::fs::read_dir(sys).is_ok_and(|mut d| d.next().is_none());
    let target = if empty && fstype_of(&all, sys) == Some("sysfs") {
        sys.to_path_buf()
    } else {
        let private = PathBuf::from(PRIVATE_MOUNT);
        std::fs::create_dir_all(&private).map_err(|e| TracefsError::Mount {
            path: PRIVATE_MOUNT.to_owned(),
            reason: e.to_string(),
        })?;
        private
    };
    mount_tracefs(&target)?;
    Ok(target)
}

fn mount_tracefs(target: &Path) -> Result<(), TracefsError> {
    let err = |reason: String| TracefsError::Mount {
        path: target.display().to_string(),
        reason,
    };
    let c_target =
        CString::new(target.as_os_str().as_encoded_bytes()).map_err(|e| err(e.to_string()))?;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c_target.as_ptr(),
            c"tracefs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}

fn event_file(root: &Path, category: &str, name: &str, file: &str) -> Result<String, TracefsError> {
    std::fs::read_to_string(root.join("events").join(category).join(name).join(file)).map_err(|e| {
        TracefsError::Missing {
            category: category.to_owned(),
            name: name.to_owned(),
            reason: e.to_string(),
        }
    })
}

/// The format of `category:name` under the tracefs `root`.
pub fn format(root: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
    let text = event_file(root, category, name, "format")?;
    Format::parse(&text).map_err(|reason| TracefsError::BadFormat {
        category: category.to_owned(),
        name: name.to_owned(),
        reason,
    })
}

/// The perf event id of `category:name` under the tracefs `root`.
pub fn id(root: &Path, category: &str, name: &str) -> Result<u64, TracefsError> {
    let text = event_file(root, category, name, "id")?;
    text.trim().parse().map_err(|_| TracefsError::BadFormat {
        category: category.to_owned(),
        name: name.to_owned(),
        reason: format!("id `{}` is not a number", text.trim()),
    })
}

#[cfg(test)]
mod tests {
    use agent_common::request::layout;

    use super::*;

    /// sock:inet_sock_set_state on Linux 6.18.
    const INET_SOCK_SET_STATE: &str = "name: inet_sock_set_state
ID: 1503
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s protocol=%s\", __print_symbolic(REC->family, { 2, \"AF_INET\" })
";

    /// syscalls:sys_enter_recvmsg on Linux 6.18.
    const SYS_ENTER_RECVMSG: &str = "name: sys_enter_recvmsg
ID: 1184
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:struct user_msghdr * msg;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned int flags;\toffset:32;\tsize:8;\tsigned:0;

print fmt: \"fd: 0x%08lx, msg: 0x%08lx, flags: 0x%08lx\", ((unsigned long)(REC->fd))
";

    /// sched:sched_process_fork on Linux 6.18 (`__data_loc` fields).
    const SCHED_PROCESS_FORK: &str = "name: sched_process_fork
ID: 321
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";

    #[test]
    fn parses_names_offsets_and_sizes() {
        let f = Format::parse(INET_SOCK_SET_STATE).unwrap();
        assert_eq!(f.fields().len(), 15);
        assert_eq!(
            f.field("skaddr"),
            Some(&FormatField {
                name: "skaddr".into(),
                offset: 8,
                size: 8
            })
        );
        assert_eq!(
            f.field("saddr_v6").map(|x| (x.offset, x.size)),
            Some((40, 16))
        );
        assert_eq!(f.field("common_pid").map(|x| x.offset), Some(4));
        let fork = Format::parse(SCHED_PROCESS_FORK).unwrap();
        assert_eq!(fork.field("child_comm").map(|x| x.offset), Some(16));
        assert_eq!(fork.field("child_pid").map(|x| x.offset), Some(20));
    }

    #[test]
    fn the_programs_offsets_match_this_kernel() {
        let f = Format::parse(INET_SOCK_SET_STATE).unwrap();
        assert_eq!(f.check(layout::inet_sock_set_state::FIELDS), Ok(()));
        let fork = Format::parse(SCHED_PROCESS_FORK).unwrap();
        assert_eq!(fork.check(layout::sched_process_fork::FIELDS), Ok(()));
        let recvmsg = Format::parse(SYS_ENTER_RECVMSG).unwrap();
        let args = [0, 1, 2].map(layout::sys_enter::arg);
        assert_eq!(recvmsg.check_arguments(&args), Ok(()));
    }

    #[test]
    fn a_moved_or_missing_field_is_a_mismatch() {
        let moved = INET_SOCK_SET_STATE.replace("oldstate;\toffset:16", "oldstate;\toffset:12");
        let f = Format::parse(&moved).unwrap();
        assert_eq!(
            f.check(layout::inet_sock_set_state::FIELDS),
            Err(Mismatch::Moved {
                name: "oldstate".into(),
                offset: 12,
                size: 4,
                want_offset: 16,
                want_size: 4
            })
        );
        let gone = INET_SOCK_SET_STATE.replace("protocol;", "proto;");
        let f = Format::parse(&gone).unwrap();
        assert_eq!(
            f.check(layout::inet_sock_set_state::FIELDS),
            Err(Mismatch::Missing("protocol".into()))
        );
        let recvmsg = Format::parse(SYS_ENTER_RECVMSG).unwrap();
        assert_eq!(
            recvmsg.check_arguments(&[layout::sys_enter::arg(3)]),
            Err(Mismatch::NoArgument(40))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Format::parse("").is_err());
        assert!(Format::parse("field:int x;\toffset:zz;\tsize:4;").is_err());
        assert!(Format::parse("field:;\toffset:1;\tsize:4;").is_err());
        assert!(Format::parse("field:int x;\toffset:8;").is_err());
    }

    const MOUNTINFO: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime shared:19 - tracefs tracefs rw
41 22 0:7 / /sys/kernel/debug rw,nosuid,nodev,noexec,relatime shared:20 - debugfs debugfs rw
99 28 0:50 / /run/lbw\\040space rw - tracefs nodev rw
bad line
";

    #[test]
    fn finds_tracefs_mounts_and_unescapes_paths() {
        assert_eq!(
            tracefs_mounts(MOUNTINFO),
            vec![
                PathBuf::from("/sys/kernel/tracing"),
                PathBuf::from("/run/lbw space")
            ]
        );
        let all = mounts(MOUNTINFO);
        assert_eq!(all.len(), 6);
        assert_eq!(
            fstype_of(&all, Path::new("/sys/kernel/tracing/events")),
            Some("tracefs")
        );
        assert_eq!(fstype_of(&all, Path::new("/sys/kernel/mm")), Some("sysfs"));
        assert_eq!(fstype_of(&all, Path::new("/etc")), Some("ext4"));
        assert!(tracefs_mounts("").is_empty());
    }
}

//! Who a pid is: /proc lookups done the moment the kernel reports a write,
//! because the process may exit (and its /proc entry vanish) right after.

use std::{ffi::CStr, fs};

use super::{Evidence, Writer};

/// Reads `/proc/<pid>/{comm,exe,status}`. Whatever cannot be read (the
/// process exited, or is a zombie whose `exe` is gone) is left `None`. The
/// user name is filled in later, off the async runtime, by [`user_name`].
pub(crate) fn writer(pid: u32) -> Writer {
    let base = format!("/proc/{pid}");
    Writer {
        pid,
        process_name: fs::read(format!("{base}/comm"))
            .ok()
            .and_then(|raw| parse_comm(&raw)),
        executable: fs::read_link(format!("{base}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        uid: fs::read_to_string(format!("{base}/status"))
            .ok()
            .and_then(|s| parse_real_uid(&s)),
        user_name: None,
        evidence: Evidence::Path,
    }
}

/// `comm` without its trailing newline; `None` when empty.
pub(crate) fn parse_comm(raw: &[u8]) -> Option<String> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    (!raw.is_empty()).then(|| String::from_utf8_lossy(raw).into_owned())
}

/// The real uid: the first of the four ids on the `Uid:` line
/// (real, effective, saved, filesystem).
pub(crate) fn parse_real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The user database's name for `uid` (getpwuid_r(3): /etc/passwd, or NSS
/// such as sssd or LDAP, so it may block: call it from a blocking thread).
pub(crate) fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: zeroed is a valid passwd (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid pointers; `buf` is writable for its length.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &raw mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &raw mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded: pw_name points to a NUL-terminated
        // string inside `buf`, which is still alive.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsed\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        Pid:\t4242\nPPid:\t1\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";

    #[test]
    fn real_uid_is_the_first_field() {
        assert_eq!(parse_real_uid(STATUS), Some(1000));
        assert_eq!(parse_real_uid("Name:\tx\n"), None);
        assert_eq!(parse_real_uid("Uid:\t\n"), None);
        assert_eq!(parse_real_uid("Uid:\tnope\t0\t0\t0\n"), None);
    }

    #[test]
    fn comm_loses_its_newline() {
        assert_eq!(parse_comm(b"sh\n").as_deref(), Some("sh"));
        assert_eq!(parse_comm(b"kworker/0:1").as_deref(), Some("kworker/0:1"));
        assert_eq!(parse_comm(b"\n"), None);
        assert_eq!(parse_comm(b"\xffx\n").as_deref(), Some("\u{fffd}x"));
    }

    #[test]
    fn resolves_this_process_and_root() {
        let me = writer(std::process::id());
        assert_eq!(me.uid, Some(rustix::process::getuid().as_raw()));
        assert!(me.process_name.is_some());
        assert!(me.executable.is_some());
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_name(u32::MAX - 7), None);
        // No such process: only the pid is known.
        let gone = writer(u32::MAX);
        assert_eq!(gone.process_name, None);
        assert_eq!(gone.uid, None);
    }
}

//! Where a run pins its flow maps in bpffs, so that a restart after a crash
//! finds the counts the crashed run had not reported yet.
//!
//! ```text
//! <bpffs>/lbwitness/<agent id>/<run>/FLOWS              the kernel flow map
//!                                  /COUNTERS           the kernel counters
//!                                  /EVENTS             the ring buffer
//!                                  /REPORTED           what was reported of each flow
//!                                  /COUNTERS_REPORTED  the counters' last reported totals
//! ```
//!
//! `<run>` is the run's start time (ns since the Unix epoch), so a run never
//! meets a crashed run's pins under its own names. A clean stop removes its
//! run directory (and the agent's and `lbwitness/` when they are empty); a
//! restart recovers, then removes, every run directory it finds. Pins live
//! as long as the bpffs mount: a reboot drops them with the kernel state
//! they describe.
//!
//! A bpffs mount is its own instance: one made inside a private mount
//! namespace (`ip netns exec`, a container) dies with that namespace, and
//! with it the pins. Point `capture.bpffs` at a mount of the host's.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// `statfs(2)`'s `f_type` of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Failure to set up the pin directory.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// bpffs is not mounted at the configured path and mounting it failed.
    #[error(
        "mounting bpffs at {path} failed ({source}); mount it (`mount -t bpf bpf {path}`) \
         or set capture.bpffs to where it is mounted"
    )]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The kernel's error.
        source: io::Error,
    },
    /// A directory or pin could not be made or read.
    #[error("{what} {path} failed: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The agent's pin directories in bpffs.
#[derive(Debug)]
pub struct Pins {
    /// `<bpffs>/lbwitness/<agent id>`.
    agent: PathBuf,
    /// This run's directory below it.
    run: PathBuf,
}

impl Pins {
    /// Mounts bpffs at `bpffs` unless one is there, and makes this run's
    /// directory. Returns it with the directories crashed runs left behind
    /// (oldest first).
    pub fn prepare(bpffs: &Path, agent_id: &str) -> Result<(Self, Vec<PathBuf>), PinError> {
        ensure_bpffs(bpffs)?;
        let agent = bpffs.join("lbwitness").join(agent_id);
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| PinError::Io { what, path, source }
        };
        std::fs::create_dir_all(&agent).map_err(io("creating", &agent))?;
        let mut left: Vec<PathBuf> = std::fs::read_dir(&agent)
            .map_err(io("reading", &agent))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        left.sort();
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let run = agent.join(started.to_string());
        std::fs::create_dir(&run).map_err(io("creating", &run))?;
        Ok((Self { agent, run }, left))
    }

    /// Where the map `name` of this run is pinned.
    pub fn path(&self, name: &str) -> PathBuf {
        self.run.join(name)
    }

    /// Removes this run's pins (a clean stop: everything was reported).
    pub fn remove(&self) {
        remove_run(&self.run);
        // Only when empty: another run's leftovers stay for the next start.
        let _ = std::fs::remove_dir(&self.agent);
        if let Some(parent) = self.agent.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Unpins every map in a run directory and removes it. The kernel frees a
/// map once nothing else holds it.
pub fn remove_run(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Err(err) = std::fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), %err, "unpinning a map failed");
        }
    }
    if let Err(err) = std::fs::remove_dir(dir) {
        tracing::warn!(path = %dir.display(), %err, "removing a pin directory failed");
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a zeroed statfs is valid; `c` is a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the kernel fills `st`.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // `f_type`'s integer type differs between targets.
    Ok(u64::try_from(st.f_type).ok() == Some(BPF_FS_MAGIC))
}

fn ensure_bpffs(path: &Path) -> Result<(), PinError> {
    let mount = |source| PinError::Mount {
        path: path.to_owned(),
        source,
    };
    if is_bpffs(path).unwrap_or(false) {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(mount)?;
    let target = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| mount(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: NUL-terminated strings; no mount data.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(mount(io::Error::last_os_error()));
    }
    tracing::info!(path = %path.display(), "mounted bpffs");
    Ok(())
}

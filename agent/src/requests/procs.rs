//! Which processes are the load balancer, and what records call them.
//!
//! The kernel traces only the processes in its filter map; this module
//! decides which those are, from `/proc` and the configured names. The
//! kernel adds forked children of a traced process itself (new workers
//! after a reload are traced from their first syscall), so the rescan here
//! only has to find processes started by exec, and to drop the dead.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

/// Most processes whose details are kept.
pub const MAX_PROCESSES: usize = 4096;

/// A traced process as records name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub name: Option<String>,
    /// `/proc/<pid>/exe`.
    pub executable: Option<String>,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22):
    /// with the pid, it names one process for the life of the host.
    pub start_ticks: u64,
}

impl ProcInfo {
    /// A process known only by its id (it exited before it was read).
    pub fn unknown(pid: u32) -> Self {
        Self {
            pid,
            name: None,
            executable: None,
            start_ticks: 0,
        }
    }
}

/// Whether a process with executable `exe` and `comm` is one of `names`:
/// a name with a `/` is a path and must equal the executable; any other
/// is compared with the executable's file name, and with `comm` (which the
/// kernel cuts to 15 bytes) when the executable is unreadable.
pub fn is_traced(exe: Option<&str>, comm: Option<&str>, names: &[String]) -> bool {
    names.iter().any(|name| {
        if name.contains('/') {
            return exe == Some(name.as_str());
        }
        match exe {
            Some(exe) => Path::new(exe).file_name().and_then(|f| f.to_str()) == Some(name),
            None => comm.is_some_and(|c| {
                !c.is_empty() && name.starts_with(c) && c.len() >= name.len().min(15)
            }),
        }
    })
}

/// The start time field of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses, so
/// fields are counted after its last `)`.
pub fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the name; field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Reads one process's details from `proc_root` (normally `/proc`).
pub fn read(proc_root: &Path, pid: u32) -> Option<ProcInfo> {
    let dir = proc_root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let start_ticks = start_ticks(&stat)?;
    let name = fs::read_to_string(dir.join("comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_owned());
    let executable = fs::read_link(dir.join("exe")).ok().and_then(|p| {
        p.to_str()
            .map(|s| s.trim_end_matches(" (deleted)").to_owned())
    });
    Some(ProcInfo {
        pid,
        name,
        executable,
        start_ticks,
    })
}

/// The traced processes, as last scanned.
#[derive(Debug)]
pub struct Processes {
    proc_root: PathBuf,
    names: Vec<String>,
    known: HashMap<u32, ProcInfo>,
}

/// What a scan changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Processes to trace from now on.
    pub added: Vec<u32>,
    /// Processes gone (or whose pid now names another program).
    pub removed: Vec<u32>,
}

impl Processes {
    /// The `/proc` it reads.
    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// Processes named `names`, under `proc_root`.
    pub fn new(proc_root: PathBuf, names: Vec<String>) -> Self {
        Self {
            proc_root,
            names,
            known: HashMap::new(),
        }
    }

    /// Scans `/proc`: every process group leader whose executable is one of
    /// the names. `also` are pids the kernel added by itself (children of
    /// traced processes): they are kept while they live, whatever their
    /// name, since a worker may exec nothing.
    pub fn rescan(&mut self, also: &[u32]) -> Changes {
        let mut seen: HashMap<u32, ProcInfo> = HashMap::new();
        if let Ok(dir) = fs::read_dir(&self.proc_root) {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let Some(info) = read(&self.proc_root, pid) else {
                    continue;
                };
                let traced = is_traced(
                    info.executable.as_deref(),
                    info.name.as_deref(),
                    &self.names,
                ) || (also.contains(&pid)
                    && self
                        .known
                        .get(&pid)
                        .is_none_or(|k| k.start_ticks == info.start_ticks));
                if traced && seen.len() < MAX_PROCESSES {
                    seen.insert(pid, info);
                }
            }
        }
        for &pid in also {
            if seen.contains_key(&pid) {
                continue;
            }
            // A child the kernel added, listed under its own pid only if it
            // is a process (not a thread) that still lives.
            if let Some(info) = read(&self.proc_root, pid)
                && seen.len() < MAX_PROCESSES
            {
                seen.insert(pid, info);
            }
        }
        let mut changes = Changes::default();
        for (pid, info) in &seen {
            match self.known.get(pid) {
                Some(old) if old.start_ticks == info.start_ticks => {}
                Some(_) => {
                    changes.removed.push(*pid);
                    changes.added.push(*pid);
                }
                None => changes.added.push(*pid),
            }
        }
        for pid in self.known.keys() {
            if !seen.contains_key(pid) {
                changes.removed.push(*pid);
            }
        }
        changes.added.sort_unstable();
        changes.removed.sort_unstable();
        self.known = seen;
        changes
    }

    /// The details of traced process `pid`, as last scanned; read now if
    /// it is new (a child the kernel added since the scan).
    pub fn info(&mut self, pid: u32) -> ProcInfo {
        if let Some(info) = self.known.get(&pid) {
            return info.clone();
        }
        match read(&self.proc_root, pid) {
            Some(info) if self.known.len() < MAX_PROCESSES => {
                self.known.insert(pid, info.clone());
                info
            }
            Some(info) => info,
            None => ProcInfo::unknown(pid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn names_match_the_executable_and_paths_match_exactly() {
        let n = names(&["haproxy", "/opt/nginx/sbin/nginx"]);
        assert!(is_traced(Some("/usr/sbin/haproxy"), Some("haproxy"), &n));
        assert!(is_traced(Some("/opt/nginx/sbin/nginx"), None, &n));
        assert!(!is_traced(Some("/usr/sbin/nginx"), Some("nginx"), &n));
        // A copy under another name is another program.
        assert!(!is_traced(
            Some("/tmp/lbw-backend"),
            Some("lbw-backend"),
            &n
        ));
        // comm only when the executable is unreadable.
        assert!(is_traced(None, Some("haproxy"), &n));
        assert!(!is_traced(None, Some("hap"), &n));
    }

    #[test]
    fn the_start_time_is_read_past_a_tricky_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_ticks(stat), Some(987_654));
        assert_eq!(start_ticks("42 (x"), None);
    }

    #[test]
    fn this_process_is_found_by_its_executable() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap().to_owned();
        let mut p = Processes::new("/proc".into(), vec![name]);
        let changes = p.rescan(&[]);
        assert!(changes.added.contains(&me), "{changes:?}");
        assert_eq!(p.info(me).pid, me);
        assert_eq!(p.rescan(&[]), Changes::default(), "nothing changed");
    }
}

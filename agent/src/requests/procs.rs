//! Which processes are the load balancer, and what records call them.
//!
//! The kernel traces only the processes in its filter map; this module
//! decides which those are, from `/proc` and the configured names. The
//! kernel adds forked children of a traced process itself (new workers
//! after a reload are traced from their first syscall), so the rescan here
//! only has to find processes started by exec, and to drop the dead.
//!
//! A process is the load balancer when its executable is one of the
//! configured names or paths, or when it runs in one of the configured
//! cgroups or below one (a systemd unit, a container). The agent itself is
//! never traced, whatever the configuration: its own reads and writes would
//! feed it events about themselves.

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

/// The cgroup a `/proc/<pid>/cgroup` file names: the unified (v2) line
/// `0::<path>`, or on a host with only v1 hierarchies the
/// `name=systemd` one, which systemd keeps in step with its units.
pub fn cgroup_path(file: &str) -> Option<&str> {
    let path = |prefix: &str| {
        file.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .filter(|p| p.starts_with('/'))
    };
    path("0::").or_else(|| {
        file.lines()
            .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
    })
}

/// Whether cgroup `path` is one of `cgroups` or below one. The configured
/// paths are normalised: absolute, no trailing `/` (so `/a` does not
/// contain `/ab`).
pub fn in_cgroups(path: &str, cgroups: &[String]) -> bool {
    cgroups.iter().any(|c| {
        path.strip_prefix(c.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Which processes are the load balancer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Executable names or absolute paths ([`is_traced`]).
    pub names: Vec<String>,
    /// cgroup paths as `/proc/<pid>/cgroup` shows them ([`in_cgroups`]).
    pub cgroups: Vec<String>,
}

impl Selector {
    /// Whether the process `info` describes, under `proc_root`, is selected.
    /// Its cgroup is read only when no name matched and cgroups are
    /// configured.
    fn selects(&self, proc_root: &Path, info: &ProcInfo) -> bool {
        if is_traced(
            info.executable.as_deref(),
            info.name.as_deref(),
            &self.names,
        ) {
            return true;
        }
        if self.cgroups.is_empty() {
            return false;
        }
        let file = proc_root.join(info.pid.to_string()).join("cgroup");
        fs::read_to_string(file)
            .ok()
            .is_some_and(|f| cgroup_path(&f).is_some_and(|p| in_cgroups(p, &self.cgroups)))
    }
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
    selector: Selector,
    /// This agent's pid under `proc_root`, never traced.
    me: u32,
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

    /// The processes `selector` selects, under `proc_root`.
    pub fn new(proc_root: PathBuf, selector: Selector) -> Self {
        Self {
            proc_root,
            selector,
            me: std::process::id(),
            known: HashMap::new(),
        }
    }

    /// Scans `/proc`: every process group leader the selector selects.
    /// `also` are pids the kernel added by itself (children of
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
                if pid == self.me {
                    continue;
                }
                let Some(info) = read(&self.proc_root, pid) else {
                    continue;
                };
                let traced = self.selector.selects(&self.proc_root, &info)
                    || (also.contains(&pid)
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
            if pid == self.me || seen.contains_key(&pid) {
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
        let mut p = Processes::new(
            "/proc".into(),
            Selector {
                names: vec![name],
                cgroups: vec![],
            },
        );
        // The agent never traces itself.
        assert!(!p.rescan(&[]).added.contains(&me));
        p.me = 0;
        let changes = p.rescan(&[]);
        assert!(changes.added.contains(&me), "{changes:?}");
        assert_eq!(p.info(me).pid, me);
        assert_eq!(p.rescan(&[]), Changes::default(), "nothing changed");
    }

    #[test]
    fn the_cgroup_is_the_unified_line_or_else_systemd_s() {
        let hybrid = "9:name=systemd:/system.slice/haproxy.service\n4:memory:/x\n0::/system.slice/haproxy.service\n";
        assert_eq!(cgroup_path(hybrid), Some("/system.slice/haproxy.service"));
        let v1 = "5:memory:/m\n1:name=systemd:/system.slice/nginx.service\n";
        assert_eq!(cgroup_path(v1), Some("/system.slice/nginx.service"));
        assert_eq!(cgroup_path("0::/a/b\n"), Some("/a/b"));
        assert_eq!(cgroup_path("3:cpu:/x\n"), None);
        assert_eq!(cgroup_path(""), None);
    }

    #[test]
    fn a_cgroup_contains_itself_and_what_is_below_it_only() {
        let c = names(&["/system.slice/haproxy.service", "/kubepods/pod1"]);
        assert!(in_cgroups("/system.slice/haproxy.service", &c));
        assert!(in_cgroups("/kubepods/pod1/ctr-a", &c));
        assert!(!in_cgroups("/system.slice/haproxy.service2", &c));
        assert!(!in_cgroups("/system.slice", &c));
        assert!(!in_cgroups("/kubepods/pod10", &c));
    }

    #[test]
    fn a_process_in_a_configured_cgroup_is_selected_whatever_its_name() {
        let root = std::env::temp_dir().join(format!("lbw-procs-{}", std::process::id()));
        let dir = root.join("77");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cgroup"), "0::/lb.slice/edge.service/worker\n").unwrap();
        let info = ProcInfo {
            pid: 77,
            name: Some("edge-proxy".into()),
            executable: Some("/opt/edge/bin/edge-proxy".into()),
            start_ticks: 1,
        };
        let by_cgroup = Selector {
            names: vec![],
            cgroups: names(&["/lb.slice/edge.service"]),
        };
        assert!(by_cgroup.selects(&root, &info));
        let elsewhere = Selector {
            names: names(&["haproxy"]),
            cgroups: names(&["/lb.slice/other.service"]),
        };
        assert!(!elsewhere.selects(&root, &info));
        fs::remove_dir_all(&root).unwrap();
    }
}

//! A cgroup of the test's own in the unified (v2) hierarchy, removed on
//! drop: the agent's `[requests] cgroups` filter is tested with a real
//! cgroup and real processes moved into it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A cgroup directory made for one test, with an optional child; see the
/// module doc.
#[derive(Debug)]
pub struct TestCgroup {
    /// The unified hierarchy's mount point.
    mount: PathBuf,
    /// Directories made, parent first.
    made: Vec<PathBuf>,
}

impl TestCgroup {
    /// Makes `/<name>/<child>` in the unified hierarchy (found in
    /// `/proc/mounts`: `/sys/fs/cgroup` on a v2 host, often
    /// `/sys/fs/cgroup/unified` on a hybrid one).
    pub fn new(name: &str, child: &str) -> anyhow::Result<Self> {
        let mounts = std::fs::read_to_string("/proc/mounts").context("read /proc/mounts")?;
        let Some(mount) = mounts.lines().find_map(|l| {
            let mut f = l.split(' ');
            let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(dir))
        }) else {
            bail!("no cgroup2 hierarchy is mounted");
        };
        let parent = mount.join(name);
        let leaf = parent.join(child);
        let mut made = Vec::new();
        for dir in [&parent, &leaf] {
            std::fs::create_dir(dir).with_context(|| format!("create {}", dir.display()))?;
            made.push(dir.clone());
        }
        Ok(Self { mount, made })
    }

    /// The parent's path as `/proc/<pid>/cgroup` shows it: `/<name>`.
    pub fn path(&self) -> String {
        self.relative(&self.made[0])
    }

    /// The child's path as `/proc/<pid>/cgroup` shows it.
    pub fn child_path(&self) -> String {
        self.relative(&self.made[1])
    }

    fn relative(&self, dir: &Path) -> String {
        format!(
            "/{}",
            dir.strip_prefix(&self.mount).unwrap_or(dir).display()
        )
    }

    /// Moves process `pid`, all its threads, into the child.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        let procs = self.made[1].join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .with_context(|| format!("move {pid} into {}", procs.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // A cgroup is removable once its processes have exited (they left
        // when the test's daemons were stopped); moments after an exit the
        // kernel may still count the process.
        for dir in self.made.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

//! [`Watcher`], set up: watches on every parent directory, the first
//! hashes, and the comparison with the previous run's state file. Running
//! it is [`Session`]'s.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::SystemTime,
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{
    AttributionMode, ChangeKind, FileChange, Observation, PathNote, Startup, WatchError,
    WatchOptions,
    change::{change, classify},
    dirs::{Dir, FanIdentity, Location, Registry, Watched},
    fanotify::{self, Fanotify, Mode},
    hash,
    inotify::Inotify,
    session::Session,
    state,
};

/// Watches files for changes; see the [module](super) documentation.
#[derive(Debug)]
pub struct Watcher {
    core: Core,
    inotify: Inotify,
    fanotify: Option<Fanotify>,
}

/// Everything but the kernel objects, which [`Watcher::run`] hands to
/// tokio.
#[derive(Debug)]
pub(super) struct Core {
    pub(super) registry: Registry,
    /// The observation last reported for each path (by index).
    pub(super) states: Vec<Observation>,
    pub(super) state_file: PathBuf,
    pub(super) options: WatchOptions,
    /// Why there is no fanotify group at all, when there is none.
    pub(super) fanotify_problem: Option<String>,
}

/// The kernel objects, borrowed.
#[derive(Clone, Copy)]
pub(super) struct Kernel<'a> {
    pub(super) inotify: &'a Inotify,
    pub(super) fanotify: Option<&'a Fanotify>,
}

impl Watcher {
    /// Watches `paths` with the default [`WatchOptions`]; see
    /// [`Watcher::with_options`].
    ///
    /// # Errors
    ///
    /// As [`Watcher::with_options`].
    pub fn new(paths: Vec<PathBuf>, state_file: PathBuf) -> Result<(Self, Startup), WatchError> {
        Self::with_options(paths, state_file, WatchOptions::default())
    }

    /// Watches `paths` (each file's parent directory), hashes them, and
    /// compares with what the previous run recorded in `state_file`.
    ///
    /// A path that does not exist is watched for creation; one whose parent
    /// directory is missing (or that cannot be watched) is left out and
    /// listed in [`Startup::skipped`]. When fanotify is unavailable, writers
    /// are not attributed (logged once, and listed in
    /// [`Startup::unattributed`]). The state file is rewritten when
    /// [`Watcher::run`] starts, so a change found here is found again if the
    /// agent stops before then.
    ///
    /// # Errors
    ///
    /// [`WatchError::StateDir`] when the state file's directory is missing,
    /// [`WatchError::Inotify`] when no inotify instance can be created.
    /// Nothing about the watched paths themselves is an error.
    pub fn with_options(
        paths: Vec<PathBuf>,
        state_file: PathBuf,
        options: WatchOptions,
    ) -> Result<(Self, Startup), WatchError> {
        let state_file = std::path::absolute(&state_file).unwrap_or(state_file);
        check_state_dir(&state_file)?;
        let inotify = Inotify::new().map_err(WatchError::Inotify)?;
        let (fanotify, fanotify_problem) = open_fanotify(options.attribution);
        let mut watcher = Self {
            core: Core {
                registry: Registry::default(),
                states: Vec::new(),
                state_file,
                options,
                fanotify_problem,
            },
            inotify,
            fanotify,
        };
        let kernel = Kernel {
            inotify: &watcher.inotify,
            fanotify: watcher.fanotify.as_ref(),
        };
        let core = &mut watcher.core;
        let mut skipped = Vec::new();
        for path in paths {
            if let Err(reason) = core.add_path(kernel, &path) {
                let path = std::path::absolute(&path).unwrap_or(path);
                warn!(path = %path.display(), %reason, "not watching this file");
                skipped.push(PathNote { path, reason });
            }
        }
        // Hashed after the watches exist: a change in between is both seen
        // here and queued as an event, which re-hashes to the same identity.
        for i in 0..core.registry.paths.len() {
            let path = core.registry.paths[i].path.clone();
            core.states.push(hash::observe(&path));
            core.follow_target(kernel, i, symlink_target(&path).as_deref());
        }
        let startup = core.startup(skipped);
        Ok((watcher, startup))
    }

    /// Sends a [`FileChange`] each time a watched path's content (SHA-256)
    /// or existence changes, until `shutdown`; then reports what is already
    /// queued and returns. Also returns, `Ok`, when the receiver is dropped.
    /// Changes that make no difference to the content (`touch`, a rewrite
    /// with the same bytes) are not reported.
    ///
    /// The state file is rewritten first, then after each batch of changes,
    /// always after the changes were sent: a crash in between makes the next
    /// run report them again (as changed-while-stopped), never lose them.
    /// Failing to write it at start is an error; later failures are logged
    /// and retried with the next change.
    ///
    /// # Errors
    ///
    /// [`WatchError::StateFile`] when the state file cannot be written at
    /// start, [`WatchError::Register`] outside a tokio runtime with I/O, and
    /// [`WatchError::Read`] when inotify cannot be read. Fanotify failures
    /// are never errors: attribution stops and detection goes on.
    pub async fn run(
        self,
        tx: mpsc::Sender<FileChange>,
        shutdown: CancellationToken,
    ) -> Result<(), WatchError> {
        Session::start(self.core, self.inotify, self.fanotify, tx)
            .await?
            .run(shutdown)
            .await
    }
}

impl Core {
    fn add_path(&mut self, kernel: Kernel<'_>, path: &Path) -> Result<(), String> {
        let path = std::path::absolute(path).map_err(|e| e.to_string())?;
        if path.to_str().is_none() {
            return Err("the path is not valid UTF-8 (the audit trail is JSON)".into());
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err("the path does not name a file".into());
        };
        if self.registry.paths.iter().any(|w| w.path == path) {
            return Err("listed more than once".into());
        }
        let dir = self.watch_dir(kernel, parent)?;
        let location = Location {
            dir,
            name: name.to_owned(),
        };
        self.registry.paths.push(Watched {
            path,
            locations: vec![location],
        });
        Ok(())
    }

    /// Watches `dir` (or finds it already watched, by any name) and marks it
    /// for fanotify; returns its index.
    pub(super) fn watch_dir(&mut self, kernel: Kernel<'_>, dir: &Path) -> Result<usize, String> {
        let wd = kernel
            .inotify
            .add_dir(dir)
            .map_err(|e| describe_dir_error(dir, &e))?;
        if let Some(i) = self.registry.dir_with_wd(wd) {
            return Ok(i);
        }
        let mut entry = Dir {
            path: dir.to_owned(),
            wd: Some(wd),
            resolved: fs::canonicalize(dir).ok(),
            fan: FanIdentity::None,
            unattributed: None,
        };
        self.mark(kernel, &mut entry);
        self.registry.dirs.push(entry);
        Ok(self.registry.dirs.len() - 1)
    }

    /// Marks a directory for fanotify and records how its events name it.
    pub(super) fn mark(&self, kernel: Kernel<'_>, dir: &mut Dir) {
        let Some(group) = kernel.fanotify else {
            dir.unattributed.clone_from(&self.fanotify_problem);
            return;
        };
        let identity = group.mark_dir(&dir.path).and_then(|()| match group.mode() {
            Mode::Names => fanotify::dir_id(&dir.path).map(FanIdentity::Handle),
            Mode::Descriptors => fs::canonicalize(&dir.path).map(FanIdentity::Path),
        });
        match identity {
            Ok(identity) => {
                dir.fan = identity;
                dir.unattributed = None;
            }
            Err(e) => {
                let reason = format!("fanotify cannot watch {}: {e}", dir.path.display());
                warn!(dir = %dir.path.display(), %reason, "writers in this directory will not be attributed");
                dir.fan = FanIdentity::None;
                dir.unattributed = Some(reason);
            }
        }
    }

    /// Keeps the second location of path `i` on its symbolic link's final
    /// target (watching the target's directory), or drops it.
    pub(super) fn follow_target(&mut self, kernel: Kernel<'_>, i: usize, target: Option<&Path>) {
        let wanted = target.and_then(|t| Some((t.parent()?, t.file_name()?)));
        let Some((dir, name)) = wanted else {
            self.registry.paths[i].locations.truncate(1);
            return;
        };
        if let Some(current) = self.registry.paths[i].locations.get(1) {
            let d = &self.registry.dirs[current.dir];
            if d.wd.is_some() && d.path == dir && current.name == name {
                return;
            }
        }
        self.registry.paths[i].locations.truncate(1);
        match self.watch_dir(kernel, dir) {
            Ok(d) => {
                let location = Location {
                    dir: d,
                    name: name.to_owned(),
                };
                if self.registry.paths[i].locations[0] != location {
                    self.registry.paths[i].locations.push(location);
                }
            }
            Err(reason) => warn!(
                path = %self.registry.paths[i].path.display(),
                target = %dir.display(),
                %reason,
                "cannot watch the symbolic link's target directory: changes to the target are seen only with the next event on the link"
            ),
        }
    }

    /// Rewrites the state file, on the blocking pool, with every path and
    /// its last reported observation.
    pub(super) async fn persist(&self) -> io::Result<()> {
        let bytes = state::encode(
            self.registry
                .paths
                .iter()
                .map(|w| w.path.as_path())
                .zip(&self.states),
        );
        let path = self.state_file.clone();
        tokio::task::spawn_blocking(move || state::save(&path, &bytes))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    }

    fn startup(&self, skipped: Vec<PathNote>) -> Startup {
        let now = SystemTime::now();
        let files: Vec<(PathBuf, Observation)> = self
            .registry
            .paths
            .iter()
            .map(|w| w.path.clone())
            .zip(self.states.iter().cloned())
            .collect();
        let unattributed = self
            .registry
            .paths
            .iter()
            .filter_map(|w| {
                let reason = self.registry.dirs[w.locations[0].dir]
                    .unattributed
                    .clone()?;
                Some(PathNote {
                    path: w.path.clone(),
                    reason,
                })
            })
            .collect();
        let (changes, state_problem, first_run) = match state::load(&self.state_file) {
            state::Previous::None => (Vec::new(), None, true),
            state::Previous::Unusable(why) => {
                warn!(%why, "the watch state file is unusable: changes made while the agent was stopped cannot be checked");
                (Vec::new(), Some(why), false)
            }
            state::Previous::Loaded(previous) => {
                let changes = files
                    .iter()
                    .filter_map(|(path, current)| {
                        let before = previous.get(path)?;
                        classify(before, current)?;
                        Some(change(
                            path.clone(),
                            ChangeKind::ChangedWhileStopped,
                            before,
                            current,
                            now,
                            None,
                        ))
                    })
                    .collect();
                (changes, None, false)
            }
        };
        Startup {
            current: files
                .iter()
                .map(|(path, o)| (path.clone(), o.state().cloned()))
                .collect(),
            unreadable: files
                .iter()
                .filter_map(|(path, o)| {
                    Some(PathNote {
                        path: path.clone(),
                        reason: o.unreadable_reason()?.to_owned(),
                    })
                })
                .collect(),
            changes,
            skipped,
            unattributed,
            state_problem,
            first_run,
        }
    }
}

/// The final target of `path` when `path` is a symbolic link that resolves.
pub(super) fn symlink_target(path: &Path) -> Option<PathBuf> {
    let meta = fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        fs::canonicalize(path).ok()
    } else {
        None
    }
}

fn check_state_dir(state_file: &Path) -> Result<(), WatchError> {
    let dir = state_file.parent().unwrap_or(Path::new("/"));
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(rustix::io::Errno::NOTDIR.into()),
        Err(e) => Err(e),
    }
    .map_err(|source| WatchError::StateDir {
        path: state_file.to_owned(),
        source,
    })
}

/// The fanotify group for `mode`, or why there is none (logged once here).
fn open_fanotify(mode: AttributionMode) -> (Option<Fanotify>, Option<String>) {
    let result = match mode {
        AttributionMode::Off => return (None, Some("attribution is turned off".into())),
        AttributionMode::Names => Fanotify::new(Mode::Names),
        AttributionMode::Descriptors => Fanotify::new(Mode::Descriptors),
        // EINVAL: FAN_REPORT_DFID_NAME needs Linux 5.9.
        AttributionMode::Auto => match Fanotify::new(Mode::Names) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Fanotify::new(Mode::Descriptors),
            other => other,
        },
    };
    match result {
        Ok(_) if !has_sys_admin() => {
            let reason = "fanotify without CAP_SYS_ADMIN reports no writer's pid (the kernel \
                          hides other processes' pids from unprivileged groups): grant the agent \
                          CAP_SYS_ADMIN to attribute writers"
                .to_owned();
            warn!(%reason, "writers of watched files will not be attributed");
            (None, Some(reason))
        }
        Ok(group) => (Some(group), None),
        Err(e) => {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) => " (the agent needs CAP_SYS_ADMIN)",
                Some(libc::ENOSYS) => " (the kernel was built without CONFIG_FANOTIFY)",
                _ => "",
            };
            let reason = format!("fanotify is unavailable: {e}{hint}");
            warn!(%reason, "writers of watched files will not be attributed");
            (None, Some(reason))
        }
    }
}

/// Whether fanotify will report other processes' pids to the agent: it
/// must hold CAP_SYS_ADMIN in the initial user namespace. Without it,
/// Linux 5.13+ still grants a group that reports file handles
/// (`FAN_REPORT_DFID_NAME`), but an unprivileged one (`FANOTIFY_UNPRIV`)
/// whose events carry pid 0 for every process but the agent itself:
/// changes are seen, writers silently never.
fn has_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let capable =
        crate::preflight::parse_cap_eff(&status).is_some_and(|eff| eff & (1 << CAP_SYS_ADMIN) != 0);
    capable && fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| is_initial_uid_map(&m))
}

/// The initial user namespace maps every uid to itself: `0 0 4294967295`.
/// Any other map is a user namespace, where CapEff says nothing about the
/// kernel's `capable()`.
fn is_initial_uid_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| !w.is_empty())
        .collect();
    lines == [vec!["0", "0", "4294967295"]]
}

fn describe_dir_error(dir: &Path, e: &io::Error) -> String {
    let dir = dir.display();
    match e.raw_os_error() {
        Some(libc::ENOENT) => format!("its directory {dir} does not exist"),
        Some(libc::ENOTDIR) => format!("{dir} is not a directory"),
        Some(libc::ENOSPC) => format!(
            "cannot watch {dir}: the inotify watch limit is reached (raise the sysctl fs.inotify.max_user_watches)"
        ),
        _ => format!("cannot watch {dir}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_initial_uid_map;

    #[test]
    fn the_initial_user_namespace_is_told_from_others() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("         0     100000      65536\n"));
        assert!(!is_initial_uid_map("0 0 1000\n1000 1000 1\n"));
        assert!(!is_initial_uid_map(""));
    }
}

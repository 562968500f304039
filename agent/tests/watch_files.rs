//! Watched files end to end: real processes change watched files in every
//! way configs get changed, and the watcher must report exactly those
//! changes, with the hashes `sha256sum` computes and the writers whose pids
//! the test knows. Needs root (fanotify needs CAP_SYS_ADMIN).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use lbwitness::watch::{
    AttributionMode, ChangeKind, Evidence, FileChange, FileState, WatchError, WatchOptions,
    Watcher, Writer,
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// How long a change may take to be reported (settle time, a lost
/// directory's retry period, and a loaded machine).
const PATIENCE: Duration = Duration::from_secs(5);
/// How long to wait to conclude that nothing is reported.
const QUIET: Duration = Duration::from_millis(1200);

/// A unique scratch directory, removed on drop (also when a test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "lbwitness-watch-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed and reaped on drop. Tests reap it only after the
/// change is received, so its /proc entry (comm, status) outlives its exit.
struct Proc(Child);

impl Proc {
    fn spawn(program: &str, args: &[&str]) -> Self {
        Self(
            Command::new(program)
                .args(args)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {program}: {e}")),
        )
    }

    /// `sh -c script`, where the script should end with a sleep so the shell
    /// is still alive (with its exe) when the watcher asks /proc about it.
    fn sh(script: &str) -> Self {
        Self::spawn("sh", &["-c", script])
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn finish(mut self) {
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A watcher running on the test's runtime.
struct Running {
    rx: mpsc::Receiver<FileChange>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), WatchError>>,
}

impl Running {
    fn start(watcher: Watcher) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watcher.run(tx, stop.clone()));
        Self { rx, stop, task }
    }

    async fn next(&mut self) -> FileChange {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("no change reported in time")
            .expect("the watcher stopped")
    }

    async fn quiet(&mut self) {
        if let Ok(change) = tokio::time::timeout(QUIET, self.rx.recv()).await {
            panic!("unexpected change: {change:?}");
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        assert!(self.rx.try_recv().is_err(), "a change was left unread");
    }
}

/// The content identity an outside tool computes.
fn identity(path: &Path) -> (String, u64) {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let sha = text.split_whitespace().next().unwrap().to_owned();
    (sha, fs::metadata(path).unwrap().len())
}

fn id(state: &Option<FileState>) -> Option<(String, u64)> {
    state.as_ref().map(|s| (s.sha256.clone(), s.size))
}

/// Checks one change: path, kind, and identities before and after.
fn check(
    change: &FileChange,
    path: &Path,
    kind: ChangeKind,
    previous: Option<&(String, u64)>,
    current: Option<&(String, u64)>,
) {
    assert_eq!(change.path, path, "{change:?}");
    assert_eq!(change.kind, kind, "{change:?}");
    assert_eq!(
        id(&change.previous).as_ref(),
        previous,
        "previous: {change:?}"
    );
    assert_eq!(id(&change.current).as_ref(), current, "current: {change:?}");
}

/// Checks that `change` took `path` from `last` to what sha256sum says it
/// holds now, and moves `last` on.
fn modified(change: &FileChange, path: &Path, last: &mut (String, u64)) {
    let now = identity(path);
    check(change, path, ChangeKind::Modified, Some(last), Some(&now));
    *last = now;
}

/// Checks that `proc` (by pid) is the writer, as root.
fn check_writer(change: &FileChange, proc: &Proc, comm: &str, evidence: Evidence) -> Writer {
    let w = change
        .writer
        .clone()
        .unwrap_or_else(|| panic!("no writer: {change:?}"));
    assert_eq!(w.pid, proc.pid(), "{w:?}");
    assert_eq!(w.process_name.as_deref(), Some(comm), "{w:?}");
    assert_eq!(w.uid, Some(0), "{w:?}");
    assert_eq!(w.user_name.as_deref(), Some("root"), "{w:?}");
    assert_eq!(w.evidence, evidence, "{w:?}");
    w
}

fn q(path: &Path) -> String {
    format!("'{}'", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_is_reported_once_with_its_writer() {
    let dir = Scratch::new("kinds");
    let cfg = dir.path("haproxy.cfg");
    let backends = dir.path("backends.cfg");
    let later = dir.path("later.cfg");
    let missing = dir.path("no-such-dir/x.cfg");
    let state = dir.path("state/watch.state");
    fs::create_dir(dir.path("state")).unwrap();
    fs::write(&cfg, "global\n").unwrap();
    fs::write(&backends, "backend a\n").unwrap();

    let paths = vec![
        cfg.clone(),
        backends.clone(),
        later.clone(),
        missing.clone(),
    ];
    let (watcher, startup) = Watcher::new(paths.clone(), state.clone()).unwrap();
    assert!(startup.first_run);
    assert!(startup.changes.is_empty());
    assert_eq!(startup.state_problem, None);
    assert!(
        startup.unattributed.is_empty(),
        "{:?}",
        startup.unattributed
    );
    assert!(startup.unreadable.is_empty());
    assert_eq!(startup.skipped.len(), 1);
    assert_eq!(startup.skipped[0].path, missing);
    assert!(
        startup.skipped[0].reason.contains("does not exist"),
        "{:?}",
        startup.skipped
    );
    let current: Vec<_> = startup
        .current
        .iter()
        .map(|(p, s)| (p.clone(), id(s)))
        .collect();
    let mut last = identity(&cfg);
    assert_eq!(
        current,
        vec![
            (cfg.clone(), Some(last.clone())),
            (backends.clone(), Some(identity(&backends))),
            (later.clone(), None),
        ]
    );
    let mut w = Running::start(watcher);

    // In-place append by a shell whose pid we know.
    let p = Proc::sh(&format!("echo '  maxconn 100' >> {}; sleep 0.5", q(&cfg)));
    let c = w.next().await;
    modified(&c, &cfg, &mut last);
    let writer = check_writer(&c, &p, "sh", Evidence::Path);
    let exe = fs::read_link(format!("/proc/{}/exe", p.pid())).unwrap();
    assert_eq!(writer.executable.as_deref(), exe.to_str());
    assert!(c.current.as_ref().unwrap().mtime.is_some());
    p.finish();

    // Truncation.
    let p = Proc::spawn("truncate", &["-s", "0", cfg.to_str().unwrap()]);
    let c = w.next().await;
    modified(&c, &cfg, &mut last);
    assert_eq!(last.1, 0);
    check_writer(&c, &p, "truncate", Evidence::Path);
    p.finish();

    // A writer that keeps the file open (3 s): reported before it closes.
    let started = Instant::now();
    let p = Proc::sh(&format!(
        "exec 3>> {}; echo '  log global' >&3; sleep 3",
        q(&cfg)
    ));
    let c = w.next().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reported only when the writer closed the file"
    );
    modified(&c, &cfg, &mut last);
    check_writer(&c, &p, "sh", Evidence::Path);
    p.finish();

    // Overwrite, then sed -i (temp file renamed over the original).
    let p = Proc::sh(&format!(
        "printf 'global\\n  maxconn 10\\n' > {}; sleep 0.3",
        q(&cfg)
    ));
    let c = w.next().await;
    modified(&c, &cfg, &mut last);
    check_writer(&c, &p, "sh", Evidence::Path);
    p.finish();
    let p = Proc::spawn("sed", &["-i", "s/10/20/", cfg.to_str().unwrap()]);
    let c = w.next().await;
    modified(&c, &cfg, &mut last);
    check_writer(&c, &p, "sed", Evidence::Path);
    p.finish();

    // A temp file written by someone else, renamed into place by mv.
    let tmp = dir.path(".haproxy.cfg.tmp");
    fs::write(&tmp, "global\n  maxconn 30\n").unwrap();
    let p = Proc::spawn("mv", &[tmp.to_str().unwrap(), cfg.to_str().unwrap()]);
    let c = w.next().await;
    modified(&c, &cfg, &mut last);
    check_writer(&c, &p, "mv", Evidence::Path);
    p.finish();

    // No content change: touch, and renaming identical content over it.
    Proc::spawn("touch", &[cfg.to_str().unwrap()]).finish();
    Proc::sh(&format!("cp {0} {0}.same && mv {0}.same {0}", q(&cfg))).finish();
    // Nor does a file that is not watched.
    Proc::sh(&format!("echo x > {}", q(&dir.path("unrelated.cfg")))).finish();
    w.quiet().await;

    // Deletion and re-creation.
    let p = Proc::spawn("rm", &[cfg.to_str().unwrap()]);
    let c = w.next().await;
    check(&c, &cfg, ChangeKind::Deleted, Some(&last), None);
    check_writer(&c, &p, "rm", Evidence::Path);
    p.finish();
    let p = Proc::sh(&format!("printf 'global\\n' > {}; sleep 0.3", q(&cfg)));
    let c = w.next().await;
    let now = identity(&cfg);
    check(&c, &cfg, ChangeKind::Created, None, Some(&now));
    check_writer(&c, &p, "sh", Evidence::Path);
    p.finish();
    last = now;

    // Another watched file in the same directory, and one created later.
    let before = identity(&backends);
    let p = Proc::sh(&format!(
        "echo '  server b 10.0.0.2:80' >> {}; sleep 0.3",
        q(&backends)
    ));
    let c = w.next().await;
    check(
        &c,
        &backends,
        ChangeKind::Modified,
        Some(&before),
        Some(&identity(&backends)),
    );
    check_writer(&c, &p, "sh", Evidence::Path);
    p.finish();
    let p = Proc::spawn("cp", &[cfg.to_str().unwrap(), later.to_str().unwrap()]);
    let c = w.next().await;
    check(
        &c,
        &later,
        ChangeKind::Created,
        None,
        Some(&identity(&later)),
    );
    check_writer(&c, &p, "cp", Evidence::Path);
    p.finish();

    // Replaced by a directory, which cannot be hashed; then back.
    Proc::spawn("rm", &[cfg.to_str().unwrap()]).finish();
    check(
        &w.next().await,
        &cfg,
        ChangeKind::Deleted,
        Some(&last),
        None,
    );
    let p = Proc::spawn("mkdir", &[cfg.to_str().unwrap()]);
    let c = w.next().await;
    check(&c, &cfg, ChangeKind::Unreadable, None, None);
    assert_eq!(c.unreadable.as_deref(), Some("a directory"));
    check_writer(&c, &p, "mkdir", Evidence::Path);
    p.finish();
    Proc::spawn("rmdir", &[cfg.to_str().unwrap()]).finish();
    check(&w.next().await, &cfg, ChangeKind::Deleted, None, None);

    // Replaced by a symbolic link: the content is the target's, and the
    // target's directory is watched from then on.
    let elsewhere = dir.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let real = elsewhere.join("real.cfg");
    fs::write(&real, "frontend web\n").unwrap();
    let p = Proc::spawn("ln", &["-s", real.to_str().unwrap(), cfg.to_str().unwrap()]);
    let c = w.next().await;
    let now = identity(&cfg);
    assert_eq!(now, identity(&real));
    check(&c, &cfg, ChangeKind::Created, None, Some(&now));
    check_writer(&c, &p, "ln", Evidence::Path);
    p.finish();
    last = now;
    let p = Proc::sh(&format!("echo '  bind :80' >> {}; sleep 0.3", q(&real)));
    let c = w.next().await;
    modified(&c, &cfg, &mut last);
    check_writer(&c, &p, "sh", Evidence::Path);
    p.finish();

    w.quiet().await;
    w.stop().await;

    // Changes while nothing watches: found by the next watcher.
    let backends_before = identity(&backends);
    let later_before = identity(&later);
    fs::write(&backends, "backend c\n").unwrap();
    fs::remove_file(&later).unwrap();
    let (watcher, startup) = Watcher::new(paths, state.clone()).unwrap();
    assert!(!startup.first_run);
    assert_eq!(startup.state_problem, None);
    assert_eq!(startup.changes.len(), 2, "{:?}", startup.changes);
    check(
        &startup.changes[0],
        &backends,
        ChangeKind::ChangedWhileStopped,
        Some(&backends_before),
        Some(&identity(&backends)),
    );
    check(
        &startup.changes[1],
        &later,
        ChangeKind::ChangedWhileStopped,
        Some(&later_before),
        None,
    );
    assert!(startup.changes.iter().all(|c| c.writer.is_none()));
    assert_eq!(id(&startup.current[0].1), Some(last));
    let w = Running::start(watcher);
    w.stop().await;
    // Nothing changed since: the third start finds nothing.
    let (_, startup) = Watcher::new(vec![cfg, backends, later], state).unwrap();
    assert!(startup.changes.is_empty(), "{:?}", startup.changes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_mode_infers_renames_from_the_directory() {
    let dir = Scratch::new("descriptors");
    let cfg = dir.path("haproxy.cfg");
    fs::write(&cfg, "global\n").unwrap();
    let options = WatchOptions {
        attribution: AttributionMode::Descriptors,
        ..WatchOptions::default()
    };
    fs::create_dir(dir.path("state")).unwrap();
    let (watcher, startup) =
        Watcher::with_options(vec![cfg.clone()], dir.path("state/watch.state"), options).unwrap();
    assert!(
        startup.unattributed.is_empty(),
        "{:?}",
        startup.unattributed
    );
    let mut w = Running::start(watcher);
    let mut last = identity(&cfg);

    let p = Proc::sh(&format!("echo '  maxconn 1' >> {}; sleep 0.5", q(&cfg)));
    let c = w.next().await;
    modified(&c, &cfg, &mut last);
    check_writer(&c, &p, "sh", Evidence::Path);
    p.finish();

    // sed writes a temp file in the same directory and renames it: this mode
    // sees only the temp file's writes. Read before the rename, the write is
    // to another entry (directory evidence); read after, the descriptor's
    // path is already the watched one (path evidence). Either way: sed.
    let p = Proc::spawn("sed", &["-i", "s/1/2/", cfg.to_str().unwrap()]);
    let c = w.next().await;
    modified(&c, &cfg, &mut last);
    let evidence = c.writer.as_ref().map(|w| w.evidence);
    check_writer(&c, &p, "sed", evidence.unwrap());
    p.finish();

    // Every descriptor the kernel opened for the watcher was closed (the
    // state file may be being written right now: it is not one of them).
    let open: Vec<_> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir.0) && !target.starts_with(dir.path("state")))
        .collect();
    assert!(open.is_empty(), "descriptors left open: {open:?}");

    // Deletions are not reported to this mode: no writer, not a guess.
    Proc::sh(&format!("echo x > {}", q(&dir.path("other")))).finish();
    Proc::spawn("rm", &[cfg.to_str().unwrap()]).finish();
    let c = w.next().await;
    check(&c, &cfg, ChangeKind::Deleted, Some(&last), None);
    assert_eq!(c.writer, None);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_attribution_changes_are_still_reported() {
    let dir = Scratch::new("off");
    let cfg = dir.path("haproxy.cfg");
    fs::write(&cfg, "global\n").unwrap();
    let options = WatchOptions {
        attribution: AttributionMode::Off,
        ..WatchOptions::default()
    };
    let (watcher, startup) =
        Watcher::with_options(vec![cfg.clone()], dir.path("watch.state"), options).unwrap();
    assert_eq!(startup.unattributed.len(), 1);
    assert_eq!(startup.unattributed[0].path, cfg);
    let mut w = Running::start(watcher);
    let last = identity(&cfg);
    Proc::sh(&format!("echo x >> {}", q(&cfg))).finish();
    let c = w.next().await;
    check(
        &c,
        &cfg,
        ChangeKind::Modified,
        Some(&last),
        Some(&identity(&cfg)),
    );
    assert_eq!(c.writer, None);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_directory_is_watched_again_when_it_returns() {
    let dir = Scratch::new("lostdir");
    let sub = dir.path("haproxy");
    let cfg = sub.join("haproxy.cfg");
    fs::create_dir(&sub).unwrap();
    fs::write(&cfg, "global\n").unwrap();
    let (watcher, _) = Watcher::new(vec![cfg.clone()], dir.path("watch.state")).unwrap();
    let mut w = Running::start(watcher);
    let last = identity(&cfg);
    Proc::spawn("rm", &["-r", sub.to_str().unwrap()]).finish();
    check(
        &w.next().await,
        &cfg,
        ChangeKind::Deleted,
        Some(&last),
        None,
    );
    fs::create_dir(&sub).unwrap();
    let p = Proc::sh(&format!("echo 'global' > {}; sleep 0.3", q(&cfg)));
    // Found by the periodic retry (or its event, once watched again).
    let c = w.next().await;
    check(&c, &cfg, ChangeKind::Created, None, Some(&identity(&cfg)));
    p.finish();
    Proc::sh(&format!("echo x >> {}", q(&cfg))).finish();
    assert_eq!(w.next().await.kind, ChangeKind::Modified);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repointed_directory_link_is_followed() {
    // The release-switch layout: current -> releases/N.
    let dir = Scratch::new("releases");
    for (release, content) in [("v1", "global\n"), ("v2", "global\n  maxconn 5\n")] {
        fs::create_dir_all(dir.path(&format!("releases/{release}"))).unwrap();
        fs::write(
            dir.path(&format!("releases/{release}/haproxy.cfg")),
            content,
        )
        .unwrap();
    }
    let current = dir.path("current");
    std::os::unix::fs::symlink(dir.path("releases/v1"), &current).unwrap();
    let cfg = current.join("haproxy.cfg");
    let (watcher, _) = Watcher::new(vec![cfg.clone()], dir.path("watch.state")).unwrap();
    let mut w = Running::start(watcher);
    let v1 = identity(&cfg);
    let v2 = identity(&dir.path("releases/v2/haproxy.cfg"));
    let p = Proc::spawn(
        "ln",
        &[
            "-sfn",
            dir.path("releases/v2").to_str().unwrap(),
            current.to_str().unwrap(),
        ],
    );
    // Seen by the periodic check of the directory's path.
    let c = w.next().await;
    check(&c, &cfg, ChangeKind::Modified, Some(&v1), Some(&v2));
    p.finish();
    // And the new directory is the one watched now.
    let p = Proc::sh(&format!("echo '  maxconn 6' >> {}; sleep 0.3", q(&cfg)));
    let c = w.next().await;
    check(
        &c,
        &cfg,
        ChangeKind::Modified,
        Some(&v2),
        Some(&identity(&cfg)),
    );
    check_writer(&c, &p, "sh", Evidence::Path);
    p.finish();
    w.quiet().await;
    w.stop().await;
}

#[test]
fn unusable_state_is_reported_not_fatal_and_a_missing_state_dir_is_an_error() {
    let dir = Scratch::new("state");
    let cfg = dir.path("haproxy.cfg");
    fs::write(&cfg, "global\n").unwrap();
    let state = dir.path("watch.state");
    fs::write(&state, "{ not json").unwrap();
    let (_, startup) = Watcher::new(vec![cfg.clone()], state).unwrap();
    assert!(!startup.first_run);
    let problem = startup.state_problem.unwrap();
    assert!(problem.contains("not a watch state file"), "{problem}");

    let err = Watcher::new(vec![cfg], dir.path("nope/watch.state")).unwrap_err();
    assert!(matches!(err, WatchError::StateDir { .. }), "{err}");
}

#[test]
fn odd_paths_are_skipped_with_a_reason() {
    let dir = Scratch::new("odd");
    let file = dir.path("plain");
    fs::write(&file, "").unwrap();
    let fifo_dir = dir.path("fifo-here");
    fs::create_dir(&fifo_dir).unwrap();
    let fifo = fifo_dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let paths = vec![
        file.join("x"),     // parent is a file
        PathBuf::from("/"), // no file name
        file.clone(),
        file.clone(), // twice
        fifo.clone(), // watched, but unreadable
    ];
    let (_, startup) = Watcher::new(paths, dir.path("watch.state")).unwrap();
    let reasons: Vec<_> = startup.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(startup.skipped.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("is not a directory"), "{reasons:?}");
    assert!(reasons[1].contains("does not name a file"), "{reasons:?}");
    assert!(reasons[2].contains("more than once"), "{reasons:?}");
    assert_eq!(startup.current.len(), 2);
    assert_eq!(startup.unreadable.len(), 1);
    assert_eq!(startup.unreadable[0].path, fifo);
    assert_eq!(startup.unreadable[0].reason, "a FIFO");
}

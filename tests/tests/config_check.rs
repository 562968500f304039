//! Config errors are found when the file is parsed, by the real binary:
//!
//! * `lbwitness run` with a bad collector address, NATS URL, stream name,
//!   credentials, CA file or `hash_field` exits 2 before it creates
//!   anything (no state directory, so no signing key) or attaches to its
//!   interface, and stderr names the file, the line and the key.
//! * `lbwitness config check FILE`, run as `nobody` without capabilities,
//!   prints what the agent would do and exits 0 on a good config, exits 2
//!   naming the problem on a bad one, and touches neither interfaces nor
//!   the state directory.
//!
//! The `run` cases attach (if they got that far) only inside the test's
//! own network namespace. Needs root: `cargo test --release -p
//! integration-tests --test config_check`.

use std::{
    io::Read as _,
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use integration_tests::{Scratch, agent::binary, find_program, lab::Lab, netns::ChildGuard};

/// A config error is found in milliseconds; an agent still running after
/// this has accepted the config.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// A bad value, where it is and what the message must say.
struct Case {
    what: &'static str,
    /// The config after `[capture]`.
    body: String,
    line: usize,
    key: &'static str,
    says: &'static str,
}

const MISSING_CA: &str = "/nonexistent/lbwitness-test-ca.pem";

fn syslog(address: &str) -> String {
    format!(
        "[[groups]]\nname = \"siem\"\nkind = \"syslog\"\n[[groups.endpoints]]\naddress = \"{address}\"\n"
    )
}

fn nats(extra: &str) -> String {
    format!(
        "[[groups]]\nname = \"archive\"\nkind = \"nats\"\n[[groups.endpoints]]\n\
         urls = [\"nats://127.0.0.1:4222\"]\n{extra}"
    )
}

/// The config head: two lines, so the bodies' first line is line 3.
fn head(iface: &str) -> String {
    format!("[capture]\ninterfaces = [\"{iface}\"]\n")
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "address without a port",
            body: syslog("127.0.0.1"),
            line: 7,
            key: "groups[0].endpoints[0].address",
            says: "host:port",
        },
        Case {
            what: "port 99999",
            body: syslog("127.0.0.1:99999"),
            line: 7,
            key: "groups[0].endpoints[0].address",
            says: "port from 1 to 65535",
        },
        Case {
            what: "NATS URL scheme",
            body: "[[groups]]\nname = \"archive\"\nkind = \"nats\"\n[[groups.endpoints]]\n\
                   urls = [\"http://127.0.0.1:4222\"]\n"
                .into(),
            line: 7,
            key: "groups[0].endpoints[0].urls[0]",
            says: "unknown scheme `http`",
        },
        Case {
            what: "stream name",
            body: nats("stream = \"LB.W\"\n"),
            line: 8,
            key: "groups[0].endpoints[0].stream",
            says: "stream `LB.W`",
        },
        Case {
            what: "user without password",
            body: nats("user = \"agent\"\n"),
            line: 8,
            key: "groups[0].endpoints[0].user",
            says: "`user` needs `password`",
        },
        Case {
            what: "unreadable CA file",
            body: nats(&format!("[groups.endpoints.tls]\nca_file = \"{MISSING_CA}\"\n")),
            line: 9,
            key: "groups[0].endpoints[0].tls.ca_file",
            says: MISSING_CA,
        },
        Case {
            what: "hash_field typo",
            body: "[[groups]]\nname = \"g\"\nkind = \"syslog\"\nstrategy = \"consistent_hash\"\n\
                   hash_field = \"source.ipp\"\n[[groups.endpoints]]\naddress = \"127.0.0.1:2514\"\n"
                .into(),
            line: 7,
            key: "groups[0].hash_field",
            says: "did you mean `source.ip`?",
        },
    ]
}

/// Runs `cmd` to its exit (killed and reported after [`EXIT_WITHIN`]);
/// returns status, stdout and stderr.
fn run_bounded(cmd: &mut Command) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(cmd)
        .expect("spawn lbwitness")
        .with_grace(Duration::from_secs(1));
    let status = child.wait_timeout(EXIT_WITHIN);
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(status) = status {
        let c = child.child_mut();
        c.stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        c.stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        return (status, stdout, stderr);
    }
    drop(child);
    panic!(
        "`{}` was still running after {EXIT_WITHIN:?}: it accepted the config",
        integration_tests::describe(cmd)
    );
}

/// Asserts stderr is one `error:` line naming the file, the line and the
/// key, saying `says`, and naming the CA file (if it does) once.
#[track_caller]
fn assert_named(case: &Case, file: &str, stderr: &str) {
    let what = case.what;
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line:\n{stderr}");
    let line = lines[0];
    assert!(
        line.starts_with(&format!(
            "error: config file {file}, line {}, column ",
            case.line
        )),
        "{what}: file and line:\n{stderr}"
    );
    assert!(
        line.contains(&format!("`{}`", case.key)),
        "{what}: key:\n{stderr}"
    );
    assert!(
        line.contains(case.says),
        "{what}: {:?}:\n{stderr}",
        case.says
    );
    // The CA error said everything twice once.
    assert!(
        line.matches(MISSING_CA).count() <= 1,
        "{what}: repeats:\n{stderr}"
    );
}

#[test]
fn bad_values_stop_run_before_anything_is_created() {
    let lab = Lab::new("cfgbad");
    for case in cases() {
        let config = Scratch::file("bad.toml", &(head(lab.iface()) + &case.body));
        let state = Scratch::path("state");
        let mut cmd = lab.lb.command(binary());
        cmd.args([
            "run",
            "--config",
            config.as_str(),
            "--state-dir",
            state.as_str(),
        ]);
        let (status, _, stderr) = run_bounded(&mut cmd);
        assert_eq!(status.code(), Some(2), "{}:\n{stderr}", case.what);
        assert_named(&case, config.as_str(), &stderr);
        assert!(
            !state.0.exists(),
            "{}: the failed start created {} (a signing key, the agent id)",
            case.what,
            state.as_str()
        );
        assert!(!lab.has_xdp(), "{}: a failed start attached XDP", case.what);
    }
}

/// `lbwitness config check ARGS` as `nobody`, with no capabilities.
fn check_unprivileged(args: &[&str]) -> (ExitStatus, String, String) {
    let setpriv = find_program("setpriv").expect("setpriv (util-linux) is installed");
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(binary())
    .args(["config", "check"])
    .args(args);
    run_bounded(&mut cmd)
}

#[test]
fn config_check_validates_without_root_or_side_effects() {
    let state = Scratch::path("state");
    let spool = format!("{}/spool", state.as_str());
    // An interface that exists nowhere: check looks at no interface.
    let text = format!(
        "state_dir = \"{}\"\n{}\
         [[groups]]\nname = \"siem\"\nkind = \"syslog\"\nstrategy = \"consistent_hash\"\n\
         hash_field = \"network.community_id\"\n\
         [[groups.endpoints]]\naddress = \"127.0.0.1:2514\"\n\
         [[groups.endpoints]]\naddress = \"[::1]:2514\"\n\
         [[groups]]\nname = \"archive\"\nkind = \"nats\"\n\
         [[groups.endpoints]]\nurls = [\"tls://127.0.0.1:4222\"]\nstream = \"LBW\"\n\
         [[routes]]\nname = \"security\"\ngroups = [\"siem\"]\n\
         [routes.match]\n\"event.action\" = [\"tcp-rst\", \"gap\"]\n\
         [routing]\ndefault = [\"archive\"]\n",
        state.as_str(),
        head("nosuch0"),
    );
    let config = Scratch::file("good.toml", &text);
    let (status, stdout, stderr) = check_unprivileged(&[config.as_str()]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    for needle in [
        format!("{}: valid (sha256 ", config.as_str()),
        "capture: XDP (auto) on nosuch0".into(),
        format!("signing key {}/signing.key", state.as_str()),
        format!("spool {spool}"),
        "group siem: consistent_hash on network.community_id (load factor 1.25) over \
         syslog+relp://127.0.0.1:2514, syslog+relp://[::1]:2514"
            .into(),
        "group archive: round_robin over nats tls://127.0.0.1:4222 (subject lbwitness.audit, stream LBW)"
            .into(),
        "route security: event.action -> siem".into(),
        "unrouted records -> archive".into(),
    ] {
        assert!(stdout.contains(&needle), "no {needle:?} in:\n{stdout}");
    }
    assert!(!state.0.exists(), "config check created {}", state.as_str());

    // The flags `run` takes apply the same way.
    let (status, stdout, stderr) =
        check_unprivileged(&[config.as_str(), "--iface", "eth9", "--xdp-mode", "generic"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("capture: XDP (generic) on eth9"),
        "{stdout}"
    );
}

#[test]
fn config_check_names_the_problem() {
    let state = Scratch::path("state");
    for case in cases() {
        let text = format!(
            "state_dir = \"{}\"\n{}",
            state.as_str(),
            head("nosuch0") + &case.body
        );
        let config = Scratch::file("bad.toml", &text);
        let (status, stdout, stderr) = check_unprivileged(&[config.as_str()]);
        assert_eq!(status.code(), Some(2), "{}:\n{stderr}", case.what);
        assert!(
            stdout.is_empty(),
            "{}: printed a summary:\n{stdout}",
            case.what
        );
        // One line more than `run` saw: the state_dir line.
        let shifted = Case {
            line: case.line + 1,
            ..case
        };
        assert_named(&shifted, config.as_str(), &stderr);
    }
    assert!(!state.0.exists(), "config check created {}", state.as_str());

    let missing = Scratch::path("missing.toml");
    let (status, _, stderr) = check_unprivileged(&[missing.as_str()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read config file {}", missing.as_str())),
        "{stderr}"
    );
}

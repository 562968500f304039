//! One state directory is one agent, one agent id is one chain, and what
//! the agent cannot attribute it says. The real binary, in test network
//! namespaces:
//!
//! * Two agents on one state directory, each with its own spool and its own
//!   interface: the second is refused (one state directory is one agent),
//!   nothing of it is attached, and the first's trail verifies.
//! * The state directory loses `audit.head` and the spool but keeps
//!   `agent.id`: the start is refused, naming the id and `--new-chain`.
//!   With `--new-chain` a new chain starts under a new id, its
//!   `agent-start` names the old id, and `verify` over the old and the new
//!   output is intact. A flag left on the next start changes nothing.
//! * A `--state-dir` whose parent does not exist is an error, and nothing
//!   is created.
//! * Only CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (setpriv): fanotify hides
//!   writers' pids, and `agent-start` and the log say writers are not
//!   attributed.
//!
//! Needs root: `cargo test --release -p integration-tests --test
//! state_identity`.

use std::{path::Path, process::Stdio, time::Duration};

use integration_tests::{
    Scratch,
    agent::{Agent, binary, has_xdp, read_records, run_refused, wait_running},
    delivery::{plain, verify_files},
    find_program,
    lab::Lab,
    netns::{ChildGuard, VethEnd, VethPair},
};
use serde_json::Value;

/// A refused start exits at once; a start that is not refused runs on.
const REFUSAL: Duration = Duration::from_secs(15);

fn action(r: &Value) -> &str {
    r["event"]["action"].as_str().unwrap_or_default()
}

fn agent_id(state: &Path) -> String {
    std::fs::read_to_string(state.join("agent.id"))
        .expect("read agent.id")
        .trim()
        .to_owned()
}

/// Stops `agent` with SIGTERM and expects a clean exit.
fn stop(agent: &mut Agent) {
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(exit.status.success(), "{}", agent.log_text());
}

/// The `agent-start` records of an output.
fn starts(output: &Path) -> Vec<Value> {
    read_records(output)
        .into_iter()
        .filter(|r| action(r) == "agent-start")
        .collect()
}

#[test]
fn two_agents_on_one_state_directory_are_refused() {
    let lab = Lab::new("onestate");
    // A second interface, so the second agent is not refused for the first
    // one's XDP program.
    let other = VethPair::new(Some(&lab.client), &lab.lb, VethEnd::new(), VethEnd::new());
    let state = Scratch::path("state");
    let (out1, out2) = (Scratch::path("one.ndjson"), Scratch::path("two.ndjson"));
    let spool_config = |name: &str| {
        let spool = Scratch::path(name);
        let config = Scratch::file(
            "spool.toml",
            &format!("[spool]\ndir = \"{}\"\n", spool.as_str()),
        );
        (spool, config)
    };
    let (_spool1, config1) = spool_config("spool1");
    let (spool2, config2) = spool_config("spool2");
    let mut first = Agent::start_with(
        &lab.lb,
        lab.iface(),
        &out1.0,
        &state.0,
        &["--config", config1.as_str()],
    );

    let (status, log) = run_refused(
        &lab.lb,
        &[
            "run",
            "--iface",
            &other.b.name,
            "--output",
            out2.as_str(),
            "--state-dir",
            state.as_str(),
            "--config",
            config2.as_str(),
        ],
        REFUSAL,
    );
    assert_eq!(status.code(), Some(1), "{log}");
    for words in [
        format!(
            "state directory {} is in use by another agent",
            state.as_str()
        ),
        "one state directory is one agent".to_owned(),
        format!("(pid {})", first.pid()),
    ] {
        assert!(log.contains(&words), "{words:?} not in:\n{log}");
    }
    assert!(
        !has_xdp(&lab.lb, &other.b.name),
        "the refused agent attached"
    );
    assert!(!spool2.0.exists(), "the refused agent made its spool");

    stop(&mut first);
    let (code, report, text) = verify_files(&state.0, &[&out1.0]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(report["agents"].as_array().map(Vec::len), Some(1), "{text}");
}

#[test]
fn a_lost_head_is_refused_and_a_new_chain_links_the_old_id() {
    let lab = Lab::new("lostHead");
    let state = Scratch::path("state");
    let (out1, out2) = (Scratch::path("old.ndjson"), Scratch::path("new.ndjson"));
    let mut old = Agent::start_with(&lab.lb, lab.iface(), &out1.0, &state.0, &[]);
    stop(&mut old);
    drop(old);
    let old_id = agent_id(&state.0);

    // The head is lost: audit.head and the spool are gone, agent.id stays.
    std::fs::remove_file(state.0.join("audit.head")).unwrap();
    std::fs::remove_dir_all(state.0.join("spool")).unwrap();
    let args = [
        "run",
        "--iface",
        lab.iface(),
        "--output",
        out2.as_str(),
        "--state-dir",
        state.as_str(),
    ];
    let (status, log) = run_refused(&lab.lb, &args, REFUSAL);
    assert_eq!(status.code(), Some(1), "{log}");
    for words in [
        format!("the chain of agent {old_id} cannot be continued"),
        "--new-chain".to_owned(),
    ] {
        assert!(log.contains(&words), "{words:?} not in:\n{log}");
    }
    assert!(!lab.has_xdp(), "a refused start left XDP attached");
    assert_eq!(agent_id(&state.0), old_id, "a refused start changed the id");

    // Told so, it starts a new chain under a new id that names the old one.
    let mut new = Agent::start_with(&lab.lb, lab.iface(), &out2.0, &state.0, &["--new-chain"]);
    stop(&mut new);
    let new_log = plain(&new.log_text());
    drop(new);
    let new_id = agent_id(&state.0);
    assert_ne!(new_id, old_id);
    let records = read_records(&out2.0);
    assert!(
        records.iter().all(|r| r["agent"]["id"] == new_id.as_str()),
        "a record of the new output is not under the new id"
    );
    assert_eq!(records[0]["event"]["sequence"], 1);
    let start = &starts(&out2.0)[0];
    assert_eq!(
        start["lbwitness"]["start"]["previous_chain"],
        serde_json::json!({"agent_id": old_id, "reason": "head-lost"}),
        "{start}"
    );
    assert!(new_log.contains("--new-chain"), "{new_log}");

    // The flag left on the next start is ignored: the new chain continues.
    let mut next = Agent::start_with(&lab.lb, lab.iface(), &out2.0, &state.0, &["--new-chain"]);
    stop(&mut next);
    assert!(
        plain(&next.log_text()).contains("--new-chain ignored"),
        "{}",
        next.log_text()
    );
    drop(next);
    assert_eq!(agent_id(&state.0), new_id);
    let later = &starts(&out2.0)[1];
    assert_eq!(later["agent"]["id"], new_id.as_str());
    assert!(
        later["lbwitness"]["start"].get("previous_chain").is_none(),
        "{later}"
    );

    // Old and new trails together: two agents, both intact.
    let (code, report, text) = verify_files(&state.0, &[&out1.0, &out2.0]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(report["agents"].as_array().map(Vec::len), Some(2), "{text}");
}

#[test]
fn a_state_dir_without_its_parent_is_an_error() {
    let lab = Lab::new("noparent");
    let parent = Scratch::path("missing");
    let state = parent.0.join("state");
    let output = Scratch::path("out.ndjson");
    let (status, log) = run_refused(
        &lab.lb,
        &[
            "run",
            "--iface",
            lab.iface(),
            "--output",
            output.as_str(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        REFUSAL,
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "state directory {} does not exist, nor does its parent {}",
            state.display(),
            parent.as_str()
        )),
        "{log}"
    );
    assert!(!parent.0.exists(), "the agent created {}", parent.as_str());
    assert!(!lab.has_xdp(), "a refused start left XDP attached");
}

#[test]
fn least_privilege_says_writers_are_not_attributed() {
    let Some(setpriv) = find_program("setpriv") else {
        eprintln!("SKIPPED: setpriv (util-linux) is not installed");
        return;
    };
    let lab = Lab::new("leastpriv");
    let watched_dir = Scratch::path("etc");
    std::fs::create_dir(&watched_dir.0).unwrap();
    let watched = watched_dir.0.join("haproxy.cfg");
    std::fs::write(&watched, "global\n").unwrap();
    let config = Scratch::file(
        "watch.toml",
        &format!("[audit]\nwatch_files = [\"{}\"]\n", watched.display()),
    );
    let (state, output, log) = (
        Scratch::path("state"),
        Scratch::path("out.ndjson"),
        Scratch::path("agent.log"),
    );
    // Root without its other capabilities: what `setcap` on the binary
    // grants (README, Privileges).
    let caps = "-all,+bpf,+net_admin,+perfmon";
    let mut cmd = lab.lb.command(setpriv);
    cmd.arg(format!("--inh-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg(binary())
        .args(["run", "--iface", lab.iface(), "--output", output.as_str()])
        .args(["--state-dir", state.as_str(), "--config", config.as_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log.0).unwrap());
    let mut agent = ChildGuard::spawn(&mut cmd).unwrap();
    wait_running(&mut agent, &log.0).unwrap_or_else(|e| panic!("{e:#}"));
    // The setup is what it claims: no CAP_SYS_ADMIN (bit 21), CAP_BPF (39).
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.id())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(eff, (1 << 12) | (1 << 38) | (1 << 39), "CapEff {eff:#x}");

    // A real write, by this test's process, while the agent watches.
    std::fs::write(&watched, "global\n    maxconn 100\n").unwrap();
    let seen = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        read_records(&output.0)
            .iter()
            .any(|r| action(r) == "file-change")
    });
    let exit = agent.stop_with(libc::SIGTERM);
    let text = plain(&std::fs::read_to_string(&log.0).unwrap_or_default());
    assert!(exit.success(), "{text}");
    assert!(seen, "no file-change record:\n{text}");

    let records = read_records(&output.0);
    let start = records.iter().find(|r| action(r) == "agent-start").unwrap();
    let problems = start["lbwitness"]["start"]["watch_problems"]
        .as_array()
        .unwrap_or_else(|| panic!("agent-start lists no watch problem: {start}"));
    assert!(
        problems.iter().any(|p| {
            let problem = p["problem"].as_str().unwrap_or_default();
            p["path"] == watched.to_str().unwrap()
                && problem.starts_with("writers not attributed")
                && problem.contains("CAP_SYS_ADMIN")
        }),
        "{start}"
    );
    assert!(
        text.contains("writers of watched files will not be attributed")
            && text.contains("CAP_SYS_ADMIN"),
        "the log does not say it:\n{text}"
    );
    // What the problem announces: the change carries no writer.
    let change = records.iter().find(|r| action(r) == "file-change").unwrap();
    assert!(change.get("process").is_none(), "{change}");
    assert!(change.get("user").is_none(), "{change}");
}

//! The audit task end to end, on its channels: cadence under a steady
//! stream, the head written ahead of every batch, rotation, and the stop.
//! The output is checked with the verifier.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use lbwitness_trail::verify::{Verdict, Verifier, input};
use tokio::sync::{mpsc, watch};

use super::*;

fn record() -> Record {
    Record::for_test("lbwitness.flow", "flow")
}

fn state_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lbw-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

struct Run {
    lines: Vec<u8>,
    actions: Vec<(String, Option<String>)>,
}

impl Run {
    /// Checkpoints written for `reason`.
    fn checkpoints(&self, reason: &str) -> usize {
        self.actions
            .iter()
            .filter(|(a, r)| a == "checkpoint" && r.as_deref() == Some(reason))
            .count()
    }
}

/// Runs a task with `every` and `interval`, feeding it what `feed` sends,
/// and collects its output; checks the head file against every batch.
/// Every record to one group.
fn one_group() -> lbwitness_delivery::route::Router {
    let routing = lbwitness_delivery::route::RoutingFile {
        default: vec!["g".into()],
    };
    lbwitness_delivery::route::Router::try_new(&[], &routing, &["g".to_owned()]).unwrap()
}

async fn run(
    name: &str,
    every: u64,
    interval: Duration,
    feed: impl AsyncFnOnce(mpsc::Sender<Record>, mpsc::Sender<Control>),
) -> Run {
    let dir = state_dir(name);
    let (head_file, _) = HeadFile::open(&dir).unwrap();
    let (batch_tx, mut batch_rx) = mpsc::channel(4);
    let (_durable_tx, durable_rx) = watch::channel(0);
    let (record_tx, record_rx) = mpsc::channel(64);
    let (control_tx, control_rx) = mpsc::channel(8);
    let task = AuditTask::new(
        Chain::new("00000000-0000-4000-8000-000000000001", Head::GENESIS),
        0,
        Signer::new(SigningKey::from_bytes(&[1; 32])),
        (every, interval),
        head_file,
        AuditRecords::new("lb1".into()),
        durable_rx,
        (one_group(), batch_tx),
    );
    let task = tokio::spawn(task.run(Vec::new(), record_rx, control_rx));
    let collect = tokio::spawn({
        let dir = dir.clone();
        async move {
            let mut lines = Vec::new();
            while let Some(batch) = batch_rx.recv().await {
                // Written ahead: the head file already covers this batch.
                let (_, persisted) = HeadFile::open(&dir).unwrap();
                assert!(persisted.unwrap().head.sequence >= batch.last_sequence);
                // One routed record per line, in order.
                let text = std::str::from_utf8(&batch.lines).unwrap();
                assert_eq!(text.lines().count(), batch.records.len());
                for (line, r) in text.lines().zip(&batch.records) {
                    assert_eq!(line.as_bytes(), batch.line(r));
                    assert_eq!(r.routes, 1);
                    assert!(line.contains(&format!("\"hash\":\"{}\"", hex::encode(r.hash))));
                }
                lines.extend(batch.lines);
            }
            lines
        }
    });
    feed(record_tx, control_tx).await;
    let finished = task.await.unwrap().unwrap();
    let lines = collect.await.unwrap();
    assert_eq!(finished.checkpointed, finished.head.sequence);
    std::fs::remove_dir_all(&dir).unwrap();
    let actions = lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            (
                v["event"]["action"].as_str().unwrap().to_owned(),
                v["event"]["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    Run { lines, actions }
}

fn verdict(lines: &[u8], key: u8) -> Verdict {
    let mut v = Verifier::new(&[SigningKey::from_bytes(&[key; 32]).verifying_key()], false);
    input::feed(&mut v, "t", lines).unwrap();
    v.finish().verdict
}

#[tokio::test]
async fn a_steady_stream_still_gets_interval_checkpoints() {
    let out = run(
        "steady",
        1_000_000,
        Duration::from_millis(40),
        async |records, _control| {
            let until = tokio::time::Instant::now() + Duration::from_millis(300);
            while tokio::time::Instant::now() < until {
                for _ in 0..64 {
                    records.send(record()).await.unwrap();
                }
                tokio::task::yield_now().await;
            }
        },
    )
    .await;
    let interval = out.checkpoints("interval");
    assert!(
        interval >= 3,
        "{interval} interval checkpoints in 300 ms at 40 ms"
    );
    let tail: Vec<&str> = out
        .actions
        .iter()
        .rev()
        .take(2)
        .map(|(a, _)| a.as_str())
        .collect();
    assert_eq!(tail, ["checkpoint", "agent-stop"]);
    assert_eq!(verdict(&out.lines, 1), Verdict::Intact);
}

#[tokio::test]
async fn every_n_records_and_when_idle() {
    let out = run(
        "count",
        10,
        Duration::from_millis(50),
        async |records, _control| {
            for _ in 0..25 {
                records.send(record()).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(180)).await;
        },
    )
    .await;
    assert!(out.checkpoints("records") >= 2, "{:?}", out.actions);
    assert!(
        out.checkpoints("interval") >= 2,
        "idle checkpoints: {:?}",
        out.actions
    );
    assert_eq!(verdict(&out.lines, 1), Verdict::Intact);
}

#[tokio::test]
async fn rotation_is_announced_with_the_old_key() {
    let out = run(
        "rotate",
        1_000_000,
        Duration::from_secs(3600),
        async |records, control| {
            records.send(record()).await.unwrap();
            // Let the task take it: the two channels have no order between them.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let reload = Control::Reload {
                record: Box::new(record()),
                key: Some(Box::new(SigningKey::from_bytes(&[2; 32]))),
                cadence: None,
            };
            control.send(reload).await.unwrap();
            control.send(Control::Stopping("SIGINT")).await.unwrap();
            records.send(record()).await.unwrap();
        },
    )
    .await;
    let actions: Vec<&str> = out.actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "flow",
            "flow",
            "checkpoint",
            "key-rotation",
            "flow",
            "agent-stop",
            "checkpoint"
        ]
    );
    // The first key alone proves it all; the second alone does not.
    assert_eq!(verdict(&out.lines, 1), Verdict::Intact);
    assert_eq!(verdict(&out.lines, 2), Verdict::Tampered);
}

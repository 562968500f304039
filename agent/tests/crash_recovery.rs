//! "After a SIGKILL at any point, the next run continues the chain without a
//! fork and without an unexplained gap", checked at every point: runs of the
//! audit core (chain, checkpoints, head file written ahead of each batch,
//! output-tail recovery, the resume decision) are killed after a random
//! batch's head was written and a random number of its bytes reached the
//! output file — a torn last line included — then restarted on the same
//! state and output, several times, and finally stopped cleanly. The
//! verifier must find the whole output intact, with no sequence twice.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use ed25519_dalek::SigningKey;
use lbwitness::audit::{
    records::AuditRecords,
    state::{self, HeadFile, Persisted},
};
use lbwitness_trail::{
    chain::Chain,
    checkpoint::{self, Signer},
    record::{Record, audit::Hook, audit::Stop},
    verify::{Verdict, Verifier, input},
};
use proptest::prelude::*;

const AGENT: &str = "00000000-0000-4000-8000-00000000c0de";
const CHECKPOINT_EVERY: u64 = 7;

fn filler(records: &AuditRecords) -> Record {
    records.hook(
        SystemTime::UNIX_EPOCH,
        true,
        Hook {
            ifindex: 1,
            interface: "veth0".into(),
            kind: "xdp",
            mode: "native",
        },
    )
}

/// One run of the agent's audit core over `batches` batches of `per_batch`
/// records. `kill = Some((batch, fraction))` kills it after that batch's head
/// was written and `fraction` of its bytes reached the output.
fn run(
    dir: &Path,
    output: &Path,
    signer: &Signer,
    batches: usize,
    per_batch: usize,
    kill: Option<(usize, f64)>,
) {
    let records = AuditRecords::new("lb1".into());
    let (tail, _cut) = state::recover_output(output, AGENT).unwrap();
    let (mut head_file, persisted) = HeadFile::open(dir).unwrap();
    let resume = state::resume(persisted, Some(tail));
    let mut chain = Chain::new(AGENT, resume.head);
    let mut checkpointed = resume.checkpointed;
    let mut durable = resume.head.sequence;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)
        .unwrap();
    let mut scratch = Vec::new();
    let mut pending: Vec<Record> = Vec::new();
    if let Some(previous) = resume.previous {
        pending.push(records.restart(SystemTime::UNIX_EPOCH, resume.head, previous));
    }
    for batch in 0..=batches {
        let mut lines = Vec::new();
        let last = batch == batches;
        if !last {
            pending.extend((0..per_batch).map(|_| filler(&records)));
        } else if kill.is_none() {
            let stop = Stop {
                records: 0,
                signal: "SIGTERM",
            };
            pending.push(records.stop(SystemTime::UNIX_EPOCH, stop));
        }
        let mut seal_checkpoint =
            |chain: &mut Chain, lines: &mut Vec<u8>, last: &mut u64, why, is_final| {
                let base = records.checkpoint(SystemTime::UNIX_EPOCH, why);
                let mut cp =
                    checkpoint::sign(chain, base, *last + 1, signer, None, is_final, &mut scratch)
                        .unwrap();
                *last = chain.seal(&mut cp, lines).unwrap();
            };
        for mut record in pending.drain(..) {
            chain.seal(&mut record, &mut lines).unwrap();
            if chain.head().sequence - checkpointed >= CHECKPOINT_EVERY {
                seal_checkpoint(&mut chain, &mut lines, &mut checkpointed, "records", false);
            }
        }
        if last && kill.is_none() {
            seal_checkpoint(&mut chain, &mut lines, &mut checkpointed, "stop", true);
        }
        // Written ahead, as the audit stage does before handing a batch on.
        let persisted = Persisted {
            head: chain.head(),
            durable,
            checkpointed,
            clean: false,
        };
        head_file.write(&persisted, false).unwrap();
        if let Some((at, fraction)) = kill
            && at == batch
        {
            let n = (lines.len() as f64 * fraction) as usize;
            file.write_all(&lines[..n]).unwrap();
            return; // SIGKILL
        }
        file.write_all(&lines).unwrap();
        durable = chain.head().sequence;
    }
    head_file
        .write(
            &Persisted {
                head: chain.head(),
                durable,
                checkpointed,
                clean: true,
            },
            true,
        )
        .unwrap();
}

/// A temporary directory, removed on drop (failing cases included).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(case: u64) -> Self {
        let d = std::env::temp_dir().join(format!("lbw-crash-{}-{case}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn killed_anywhere_the_chain_continues(
        runs in prop::collection::vec((1usize..5, 1usize..12, 0usize..5, 0.0f64..1.0), 1..4),
        last_batches in 1usize..4,
        case in any::<u64>(),
    ) {
        let scratch = ScratchDir::new(case);
        let dir = &scratch.0;
        let output = dir.join("records.ndjson");
        let signer = Signer::new(SigningKey::from_bytes(&[9; 32]));
        for (batches, per_batch, kill_batch, fraction) in &runs {
            run(dir, &output, &signer, *batches, *per_batch, Some((kill_batch % (batches + 1), *fraction)));
        }
        run(dir, &output, &signer, last_batches, 3, None);

        let mut v = Verifier::new(&[signer.public()], false);
        input::feed(&mut v, "records.ndjson", std::fs::File::open(&output).unwrap()).unwrap();
        let report = v.finish();
        let text = lbwitness_trail::verify::human::render(&report);
        prop_assert_eq!(report.verdict, Verdict::Intact, "{}", text);
        prop_assert_eq!(report.agents.len(), 1, "{}", text);
        prop_assert_eq!(report.agents[0].identical_duplicates, 0, "{}", text);
        prop_assert_eq!(report.agents[0].first_sequence, 1);
    }
}

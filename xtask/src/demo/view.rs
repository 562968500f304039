//! The live view: records as the collectors store them, the agent's own
//! delivery log lines, and the count table read from the collectors.

use std::path::Path;

use anyhow::Result;
use integration_tests::collectors::nats::JsClient;
use serde_json::Value;

use super::{
    collectors::{Collectors, STREAM, Tail},
    requests::Tally,
    show,
};

/// Follows the collectors and the agent's log.
pub struct View {
    /// rsyslog-a and rsyslog-b's stored files.
    archive: [Tail; 2],
    agent_log: Tail,
    nats_port: u16,
    nats: Option<JsClient>,
    /// The next stream sequence to read.
    nats_next: u64,
    /// Whether the archive holds the final checkpoint.
    archive_final: bool,
    /// Whether the stream holds it.
    nats_final: bool,
    /// Request records the archive stored.
    requests: Tally,
}

impl View {
    /// Starts following `collectors` and the agent's `log`.
    pub fn new(collectors: &Collectors, log: &Path) -> Result<Self> {
        let [a, b] = collectors.archive_files();
        Ok(Self {
            archive: [Tail::new(&a), Tail::new(&b)],
            agent_log: Tail::new(log),
            nats_port: collectors.nats.port(),
            nats: Some(collectors.nats_client()?),
            nats_next: 0,
            archive_final: false,
            nats_final: false,
            requests: Tally::default(),
        })
    }

    /// Prints what was stored, and logged, since the last tick: records in
    /// sequence order, each tagged with the collector that stored it.
    pub fn tick(&mut self) {
        let mut stored: Vec<(u64, &str, String)> = Vec::new();
        for (tail, tag) in self.archive.iter_mut().zip(["[a]", "[b]"]) {
            stored.extend(
                tail.poll()
                    .into_iter()
                    .map(|line| (tag, line.into_bytes()))
                    .map(|(tag, line)| {
                        record(
                            tag,
                            &line,
                            &mut self.archive_final,
                            Some(&mut self.requests),
                        )
                    }),
            );
        }
        let from = self.nats_next;
        let messages = self
            .with_nats(|c| c.stored_messages_from(STREAM, from))
            .unwrap_or_default();
        for m in messages {
            self.nats_next = m.seq + 1;
            stored.push(record("[nats]", &m.data, &mut self.nats_final, None));
        }
        stored.sort_by_key(|(seq, tag, _)| (*seq, *tag));
        for (_, tag, text) in stored {
            println!("{tag:<6} {text}");
        }
        for line in self.agent_log.poll() {
            // The agent's own view, every 10 s: acknowledged per group and
            // per endpoint. Warnings and errors say what went wrong.
            if let Some(at) = line.find("delivered ") {
                println!("agent: {}", &line[at..]);
            } else if line.contains("WARN") || line.contains("ERROR") {
                println!("agent: {}", line.trim());
            }
        }
    }

    /// The request counts (per backend, per status, per mapping), once a
    /// request record was stored.
    pub fn request_counts(&self) -> Option<String> {
        self.requests.line()
    }

    /// The count table: lines each rsyslogd stored, messages in the stream.
    pub fn counts(&mut self) -> String {
        let nats = self.with_nats(|c| {
            let info = c.stream_info(STREAM)?;
            Ok(info["state"]["messages"].as_u64())
        });
        show::counts(&[
            ("rsyslog-a", Some(self.archive[0].lines)),
            ("rsyslog-b", Some(self.archive[1].lines)),
            ("nats(security)", nats.flatten()),
        ])
    }

    /// Whether the archive and the stream both hold the final checkpoint.
    pub fn has_final(&self) -> bool {
        self.archive_final && self.nats_final
    }

    /// Runs `f` with a NATS client, reconnecting after an error.
    fn with_nats<T>(&mut self, f: impl FnOnce(&mut JsClient) -> Result<T>) -> Option<T> {
        if self.nats.is_none() {
            self.nats = JsClient::connect(self.nats_port, None).ok();
        }
        let result = f(self.nats.as_mut()?);
        match result {
            Ok(value) => Some(value),
            Err(_) => {
                self.nats = None;
                None
            }
        }
    }
}

/// A stored line as `(sequence, tag, description)`; sets `is_final` when
/// it is the final checkpoint, and counts request records in `tally`.
fn record<'t>(
    tag: &'t str,
    line: &[u8],
    is_final: &mut bool,
    tally: Option<&mut Tally>,
) -> (u64, &'t str, String) {
    match serde_json::from_slice::<Value>(line) {
        Ok(r) => {
            if r["lbwitness"]["checkpoint"]["final"] == true {
                *is_final = true;
            }
            if let Some(t) = tally {
                t.add(&r);
            }
            let seq = r["event"]["sequence"].as_u64().unwrap_or(0);
            (seq, tag, show::describe(&r))
        }
        Err(_) => (
            0,
            tag,
            format!("(not JSON) {}", String::from_utf8_lossy(line)),
        ),
    }
}

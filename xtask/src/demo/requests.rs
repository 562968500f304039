//! The demo's load balancer: a real HAProxy (HTTP mode, two threads) in
//! front of three nginx backends, in a lab of its own (tests/src/lb), with
//! clients sending rounds of requests that the backends answer 200, 404,
//! 500 or 503 by path. The agent follows HAProxy from the kernel and maps
//! every request to the backend that served it; the view prints each
//! request record and counts them per backend and per status.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use integration_tests::lb::{
    client::Load,
    haproxy::{Haproxy, HaproxyConfig},
    lab::LbLab,
};
use serde_json::Value;

/// Requests per round, and the connections they share.
const ROUND_REQUESTS: usize = 12;
const ROUND_CONNECTIONS: usize = 3;

/// HAProxy, its backends and its clients; stopped on drop (HAProxy first).
pub struct LbDemo {
    haproxy: Haproxy,
    lab: LbLab,
}

impl LbDemo {
    /// Builds the lab and starts HAProxy.
    pub fn start() -> Result<Self> {
        let lab = LbLab::new("demo").context("building the load-balancer lab")?;
        let haproxy = Haproxy::start(&lab, HaproxyConfig::http()).context("starting HAProxy")?;
        Ok(Self { haproxy, lab })
    }

    /// One line for the header: where HAProxy listens and its backends.
    pub fn describe(&self) -> String {
        let servers: Vec<String> = self
            .lab
            .servers()
            .into_iter()
            .map(|(name, addr)| format!("{name} {addr}"))
            .collect();
        format!(
            "lab: HAProxy {} (pid {}, {} threads) -> {}",
            self.frontend(),
            self.haproxy.pid().unwrap_or(0),
            self.haproxy.threads(),
            servers.join(", ")
        )
    }

    /// One round of keep-alive requests from the lab's clients; returns
    /// how many got an answer.
    pub fn round(&self) -> usize {
        let mut load = Load::new(self.frontend(), self.lab.client_ips());
        load.requests = ROUND_REQUESTS;
        load.connections = ROUND_CONNECTIONS;
        let report = load.run(&self.lab.net.client);
        report.exchanges.len() - report.errors().len()
    }

    fn frontend(&self) -> std::net::SocketAddr {
        self.haproxy.config.frontends()[0]
    }
}

/// Request records counted by backend, by status and by mapping.
#[derive(Debug, Default)]
pub struct Tally {
    backends: BTreeMap<String, u64>,
    statuses: BTreeMap<String, u64>,
    mappings: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts `r` if it is a request record.
    pub fn add(&mut self, r: &Value) {
        if r["event"]["dataset"] != "lbwitness.request" {
            return;
        }
        let backend = match r["destination"].get("nat").filter(|n| !n.is_null()) {
            Some(nat) => format!("{}:{}", text(&nat["ip"]), nat["port"]),
            None => "none".to_owned(),
        };
        let status = r["http"]["response"]["status_code"]
            .as_u64()
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        let mapping = text(&r["lbwitness"]["backend"]["mapping"]);
        *self.backends.entry(backend).or_default() += 1;
        *self.statuses.entry(status).or_default() += 1;
        *self.mappings.entry(mapping).or_default() += 1;
    }

    /// `requests: by backend 10.2.1.2:8080 14 ... | by status 200 30 ... |
    /// mapped 40`, or `None` before the first request record.
    pub fn line(&self) -> Option<String> {
        if self.mappings.is_empty() {
            return None;
        }
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        Some(format!(
            "requests: by backend {} | by status {} | {}",
            join(&self.backends),
            join(&self.statuses),
            join(&self.mappings)
        ))
    }
}

/// A string field as text, anything else as JSON.
fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_tally_counts_request_records_only() {
        let mut t = Tally::default();
        assert_eq!(t.line(), None);
        let req = |nat: Value, status: Value, mapping: &str| {
            json!({"event": {"dataset": "lbwitness.request"},
                "destination": {"ip": "10.0.0.1", "port": 80, "nat": nat},
                "http": {"response": {"status_code": status}},
                "lbwitness": {"backend": {"mapping": mapping}}})
        };
        t.add(&req(
            json!({"ip": "10.2.1.2", "port": 8080}),
            json!(200),
            "mapped",
        ));
        t.add(&req(
            json!({"ip": "10.2.1.2", "port": 8080}),
            json!(404),
            "mapped",
        ));
        t.add(&req(Value::Null, Value::Null, "ambiguous"));
        t.add(&json!({"event": {"dataset": "lbwitness.flow"}}));
        assert_eq!(
            t.line().as_deref(),
            Some(
                "requests: by backend 10.2.1.2:8080 2  none 1 | by status 200 1  404 1  none 1 \
                 | ambiguous 1  mapped 2"
            )
        );
    }
}

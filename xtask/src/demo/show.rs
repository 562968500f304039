//! What the demo prints: one line per record, and the per-collector count
//! table. Pure functions over values, so they are unit-tested.

use serde_json::Value;

/// One line describing a record: its sequence, action and the fields that
/// matter for its kind (flow endpoints and counters, checkpoint range, gap
/// count, watched file, kernel counter deltas).
pub fn describe(r: &Value) -> String {
    let ev = &r["event"];
    // serde_json's Display ignores widths: pad the rendered text.
    let seq = format!("#{}", ev["sequence"]);
    let mut text = format!("{seq:<6} {:<16}", s(&ev["action"]));
    if ev["dataset"] == "lbwitness.request" {
        text += &request(r);
    } else if ev["dataset"] == "lbwitness.connection" {
        text += &connection(r);
    } else if let Some(net) = r.get("network") {
        text += &format!(
            " {:<9} {} -> {}",
            s(&net["transport"]),
            endpoint(&r["source"]),
            endpoint(&r["destination"])
        );
        if let Some(p) = net.get("packets") {
            text += &format!("  {p} pkts {} B", net["bytes"]);
        }
        if let Some(vlan) = net.get("vlan") {
            text += &format!("  vlan {}", s(&vlan["id"]));
        }
        if let Some(why) = ev.get("reason") {
            text += &format!("  ({})", s(why));
        }
    } else if let Some(c) = r["lbwitness"].get("checkpoint") {
        let key = s(&c["key_id"]);
        text += &format!(
            " {} records {}..{} signed by {}..{}",
            c["count"],
            c["first_sequence"],
            c["last_sequence"],
            key.get(..12).unwrap_or(&key),
            if c["final"] == true { " (final)" } else { "" }
        );
    } else if let Some(g) = r["lbwitness"].get("gap") {
        text += &format!(
            " {} {} lost ({})",
            g["count"],
            s(&g["reason"]),
            s(&g["source"])
        );
    } else if let Some(f) = r.get("file") {
        let hash = s(&f["hash"]["sha256"]);
        text += &format!(
            " {} now sha256 {}..",
            s(&f["path"]),
            hash.get(..12).unwrap_or(&hash)
        );
    } else if let Some(kernel) = r["lbwitness"].get("kernel") {
        let moved: Vec<String> = kernel
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v["delta"].as_u64() > Some(0))
            .map(|(k, v)| format!("{k}+{}", v["delta"]))
            .collect();
        text += &format!(
            " kernel counters: {}",
            if moved.is_empty() {
                "no change".into()
            } else {
                moved.join(" ")
            }
        );
    }
    text.trim_end().to_owned()
}

/// ` GET /cart 200 192.0.2.7:51544 -> 198.51.100.2:8080 3.1 ms (mapped)`.
fn request(r: &Value) -> String {
    let http = &r["http"];
    let status = http["response"]["status_code"]
        .as_u64()
        .map_or_else(|| "---".to_owned(), |s| s.to_string());
    let backend = match r["destination"].get("nat").filter(|n| !n.is_null()) {
        Some(nat) => endpoint(nat),
        None => "no backend".to_owned(),
    };
    let ms = r["event"]["duration"]
        .as_u64()
        .map_or_else(String::new, |ns| format!(" {:.1} ms", ns as f64 / 1e6));
    let b = &r["lbwitness"]["backend"];
    let mapping = match b.get("reason").filter(|v| !v.is_null()) {
        Some(why) => format!("{}: {}", s(&b["mapping"]), s(why)),
        None => s(&b["mapping"]),
    };
    format!(
        " {} {} {status} {} -> {backend}{ms} ({mapping})",
        s(&http["request"]["method"]),
        s(&r["url"]["path"]),
        endpoint(&r["source"]),
    )
}

/// ` client 192.0.2.7:51544 -> 192.0.2.2:80 3 requests, closed by client`.
fn connection(r: &Value) -> String {
    let c = &r["lbwitness"]["connection"];
    let mut text = format!(
        " {} {} -> {} {} requests, closed by {}",
        s(&c["role"]),
        endpoint(&r["source"]),
        endpoint(&r["destination"]),
        c["requests"],
        s(&c["closed_by"])
    );
    if let Some(e) = r.get("error").filter(|e| !e.is_null()) {
        text += &format!(" ({})", s(&e["message"]));
    }
    text
}

/// The count table: `collectors: rsyslog-a 412  rsyslog-b 409  nats 37`.
pub fn counts(columns: &[(&str, Option<u64>)]) -> String {
    let cells: Vec<String> = columns
        .iter()
        .map(|(name, n)| match n {
            Some(n) => format!("{name} {n}"),
            None => format!("{name} ?"),
        })
        .collect();
    format!("collectors: {}", cells.join("  "))
}

/// A string field as text, anything else as JSON.
fn s(v: &Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

/// `ip:port`, or `ip` for ICMP.
fn endpoint(e: &Value) -> String {
    match e.get("port") {
        Some(p) => format!("{}:{}", s(&e["ip"]), p),
        None => s(&e["ip"]),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_flow_shows_endpoints_counters_vlan_and_reason() {
        let r = json!({
            "event": {"sequence": 7, "action": "flow", "reason": "idle-timeout"},
            "network": {"transport": "udp", "packets": 2, "bytes": 120, "vlan": {"id": "100"}},
            "source": {"ip": "192.0.2.1", "port": 40001},
            "destination": {"ip": "192.0.2.2", "port": 53},
        });
        assert_eq!(
            describe(&r),
            "#7     flow             udp       192.0.2.1:40001 -> 192.0.2.2:53  \
             2 pkts 120 B  vlan 100  (idle-timeout)"
        );
    }

    #[test]
    fn a_record_without_details_has_no_trailing_blanks() {
        let r = json!({"event": {"sequence": 123456, "action": "agent-start"}});
        assert_eq!(describe(&r), "#123456 agent-start");
    }

    #[test]
    fn icmp_has_no_ports() {
        let r = json!({
            "event": {"sequence": 1, "action": "flow"},
            "network": {"transport": "icmp"},
            "source": {"ip": "192.0.2.1"},
            "destination": {"ip": "192.0.2.2"},
        });
        assert!(describe(&r).ends_with("icmp      192.0.2.1 -> 192.0.2.2"));
    }

    #[test]
    fn a_final_checkpoint_says_so_and_a_short_key_does_not_panic() {
        let r = json!({
            "event": {"sequence": 40, "action": "checkpoint"},
            "lbwitness": {"checkpoint": {"count": 40, "first_sequence": 1,
                "last_sequence": 40, "key_id": "abc", "final": true}},
        });
        assert_eq!(
            describe(&r),
            "#40    checkpoint       40 records 1..40 signed by abc.. (final)"
        );
    }

    #[test]
    fn gaps_files_and_kernel_counters() {
        let gap = json!({"event": {"sequence": 2, "action": "gap"},
            "lbwitness": {"gap": {"count": 3, "reason": "restart", "source": "agent"}}});
        assert!(describe(&gap).ends_with(" 3 restart lost (agent)"));
        let file = json!({"event": {"sequence": 3, "action": "file-change"},
            "file": {"path": "/etc/haproxy.cfg", "hash": {"sha256": "0123456789abcdef"}}});
        assert!(describe(&file).ends_with(" /etc/haproxy.cfg now sha256 0123456789ab.."));
        let kernel = json!({"event": {"sequence": 4, "action": "kernel-counters"},
            "lbwitness": {"kernel": {"a": {"delta": 0}, "b": {"delta": 5}}}});
        assert!(describe(&kernel).ends_with(" kernel counters: b+5"));
        let idle = json!({"event": {"sequence": 5, "action": "kernel-counters"},
            "lbwitness": {"kernel": {"a": {"delta": 0}}}});
        assert!(describe(&idle).ends_with(" kernel counters: no change"));
    }

    #[test]
    fn a_request_shows_method_path_status_client_backend_time_and_mapping() {
        let r = json!({
            "event": {"sequence": 812, "action": "http-request", "dataset": "lbwitness.request",
                "duration": 3_100_000},
            "source": {"ip": "192.0.2.7", "port": 51544},
            "destination": {"ip": "192.0.2.2", "port": 80,
                "nat": {"ip": "198.51.100.2", "port": 8080}},
            "http": {"request": {"method": "GET"}, "response": {"status_code": 200}},
            "url": {"path": "/cart"},
            "lbwitness": {"backend": {"mapping": "mapped"}},
        });
        assert_eq!(
            describe(&r),
            "#812   http-request     GET /cart 200 192.0.2.7:51544 -> 198.51.100.2:8080 \
             3.1 ms (mapped)"
        );
        let r = json!({
            "event": {"sequence": 9, "action": "http-request", "dataset": "lbwitness.request"},
            "source": {"ip": "192.0.2.7", "port": 51544},
            "http": {"request": {"method": "GET"}},
            "url": {"path": "/"},
            "lbwitness": {"backend": {"mapping": "ambiguous", "reason": "tie"}},
        });
        assert!(
            describe(&r).ends_with("GET / --- 192.0.2.7:51544 -> no backend (ambiguous: tie)"),
            "{}",
            describe(&r)
        );
    }

    #[test]
    fn a_connection_shows_role_ends_requests_and_error() {
        let r = json!({
            "event": {"sequence": 5, "action": "connection", "dataset": "lbwitness.connection"},
            "source": {"ip": "10.0.0.1", "port": 40000},
            "destination": {"ip": "10.2.0.1", "port": 8099},
            "lbwitness": {"connection": {"role": "backend", "requests": 0, "closed_by": "lb"}},
            "error": {"message": "connection refused"},
        });
        assert!(describe(&r).ends_with(
            "backend 10.0.0.1:40000 -> 10.2.0.1:8099 0 requests, closed by lb (connection refused)"
        ));
    }

    #[test]
    fn counts_name_every_collector_and_mark_unknown_ones() {
        assert_eq!(
            counts(&[("rsyslog-a", Some(412)), ("nats", None)]),
            "collectors: rsyslog-a 412  nats ?"
        );
    }
}

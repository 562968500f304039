//! Compares the agent's `lbwitness.request` records with the load
//! balancer's own log (the oracle): which records match a logged request,
//! which name the wrong backend, which requests have no record, which
//! records no request, and which fields disagree.
//!
//! A log line and a record describe the same request when they have the
//! same client `ip:port`, method and path. With keep-alive several
//! requests share a client port, and byte-identical requests share the
//! method and path too, so within one client connection both sides are
//! taken in order (log lines in log order, which follows request order on
//! a connection; records by `event.start`) and paired in order per method
//! and path. When counts differ (a record missing), the pairing is the
//! order-preserving one that explains the most records (see `align`), so a
//! missing record shows as missing, not as a run of wrong ones.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::log_entry::LbLogEntry;

/// How many items of each kind [`Comparison`]'s `Display` lists.
const SHOWN: usize = 10;

/// A record's fields the comparison reads, pulled out of its JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView {
    /// Index in the records given to [`compare`].
    pub index: usize,
    /// `source.ip`/`source.port`.
    pub client: Option<SocketAddr>,
    /// `source.nat.ip`/`.port`: the LB's address toward the backend.
    pub backend_src: Option<SocketAddr>,
    /// `destination.nat.ip`/`.port`: the backend.
    pub server: Option<SocketAddr>,
    /// `http.request.method`.
    pub method: Option<String>,
    /// `url.path`.
    pub path: Option<String>,
    /// `url.domain`.
    pub domain: Option<String>,
    /// `http.response.status_code`.
    pub status: Option<u16>,
    /// `lbwitness.backend.mapping`.
    pub mapping: Option<String>,
    /// `event.start`, as text (RFC 3339 sorts as text).
    pub start: Option<String>,
}

impl RecordView {
    /// Reads the fields of `record`, nested (`{"source": {"ip": ..}}`) or
    /// dotted (`{"source.ip": ..}`); `index` names it in reports.
    pub fn new(index: usize, record: &Value) -> Self {
        let addr = |ip: &str, port: &str| -> Option<SocketAddr> {
            let ip: IpAddr = field(record, ip)?.as_str()?.parse().ok()?;
            let port = u16::try_from(field(record, port)?.as_u64()?).ok()?;
            Some(SocketAddr::new(ip, port))
        };
        let text = |path: &str| {
            field(record, path)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Self {
            index,
            client: addr("source.ip", "source.port"),
            backend_src: addr("source.nat.ip", "source.nat.port"),
            server: addr("destination.nat.ip", "destination.nat.port"),
            method: text("http.request.method"),
            path: text("url.path"),
            domain: text("url.domain"),
            status: field(record, "http.response.status_code")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok()),
            mapping: text("lbwitness.backend.mapping"),
            start: text("event.start"),
        }
    }

    fn key(&self) -> Key {
        (self.method.clone(), self.path.clone())
    }
}

/// `path` (dot-separated) in `value`, nested or as one dotted key at any
/// level (`{"source": {"nat.ip": ..}}` too).
fn field<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    if let Some(found) = object.get(path) {
        return Some(found);
    }
    let mut split = path.match_indices('.').map(|(i, _)| i);
    split.find_map(|i| field(object.get(&path[..i])?, &path[i + 1..]))
}

/// A record that names another backend than the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongMapping {
    /// The log line.
    pub log: LbLogEntry,
    /// The record.
    pub record: RecordView,
}

/// A field on which a matched record and log line disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldMismatch {
    /// `status`, `method`, `path` or `host`.
    pub field: &'static str,
    /// The log's value.
    pub log: String,
    /// The record's value.
    pub record: String,
    /// The client connection.
    pub client: SocketAddr,
    /// The record's index.
    pub index: usize,
}

/// The outcome of [`compare`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Log lines (requests the LB served).
    pub total: usize,
    /// Records given.
    pub records: usize,
    /// Records matched to a log line.
    pub matched_to_log: usize,
    /// Matched records with `mapping: "mapped"`.
    pub mapped: usize,
    /// Matched records with `mapping: "exact"`.
    pub exact: usize,
    /// Matched records with `mapping: "ambiguous"` (or none).
    pub ambiguous: usize,
    /// Mapped or exact records whose backend (or LB source address) is
    /// not the log's.
    pub wrong: Vec<WrongMapping>,
    /// Log lines no record matched.
    pub missing: Vec<LbLogEntry>,
    /// Records that matched no log line.
    pub extra: Vec<RecordView>,
    /// Disagreements on status, method, path or host of matched pairs.
    pub mismatches: Vec<FieldMismatch>,
}

impl Comparison {
    /// Share of log lines whose record is mapped or exact, from 0 to 1.
    pub fn mapped_share(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        (self.mapped + self.exact) as f64 / self.total as f64
    }

    /// Every log line has a record, every record a log line, nothing is
    /// wrong or ambiguous, and every field agrees.
    pub fn is_perfect(&self) -> bool {
        self.wrong.is_empty()
            && self.missing.is_empty()
            && self.extra.is_empty()
            && self.mismatches.is_empty()
            && self.ambiguous == 0
            && self.matched_to_log == self.total
    }
}

/// Matches `records` (the agent's `lbwitness.request` records) to `log`
/// (the LB's log of the same run) and counts; see the module doc.
pub fn compare(log: &[LbLogEntry], records: &[Value]) -> Comparison {
    let views: Vec<RecordView> = records
        .iter()
        .enumerate()
        .map(|(i, r)| RecordView::new(i, r))
        .collect();
    let mut by_client: BTreeMap<SocketAddr, Vec<&LbLogEntry>> = BTreeMap::new();
    for entry in log {
        by_client.entry(entry.client).or_default().push(entry);
    }
    let mut records_by_client: BTreeMap<Option<SocketAddr>, Vec<&RecordView>> = BTreeMap::new();
    for view in &views {
        records_by_client.entry(view.client).or_default().push(view);
    }
    let mut out = Comparison {
        total: log.len(),
        records: records.len(),
        ..Comparison::default()
    };
    if let Some(unaddressed) = records_by_client.remove(&None) {
        out.extra.extend(unaddressed.into_iter().cloned());
    }
    for (client, mut recs) in records_by_client {
        // Stable: records without a start keep their given order.
        recs.sort_by(|a, b| a.start.cmp(&b.start));
        let lines: Vec<&LbLogEntry> = client
            .and_then(|c| by_client.remove(&c))
            .unwrap_or_default();
        // Requests with different method or path never pair, so align
        // each (method, path) on its own, in order.
        let mut keys: BTreeMap<Key, (Vec<&LbLogEntry>, Vec<&RecordView>)> = BTreeMap::new();
        for line in lines {
            let key = (line.method.clone(), line.path().map(str::to_owned));
            keys.entry(key).or_default().0.push(line);
        }
        for rec in recs {
            keys.entry(rec.key()).or_default().1.push(rec);
        }
        for (lines, recs) in keys.into_values() {
            let pairs = align(&lines, &recs);
            let (mut line_used, mut rec_used) = (vec![false; lines.len()], vec![false; recs.len()]);
            for (i, j) in pairs {
                line_used[i] = true;
                rec_used[j] = true;
                judge(&mut out, lines[i], recs[j]);
            }
            out.missing
                .extend(unused(&lines, &line_used).map(|l| (*l).clone()));
            out.extra
                .extend(unused(&recs, &rec_used).map(|r| (*r).clone()));
        }
    }
    out.missing
        .extend(by_client.into_values().flatten().cloned());
    out
}

/// Method and path: what a log line and a record must share to pair.
type Key = (Option<String>, Option<String>);

fn unused<'a, T>(items: &'a [T], used: &'a [bool]) -> impl Iterator<Item = &'a T> {
    items.iter().zip(used).filter(|(_, u)| !**u).map(|(t, _)| t)
}

/// The order-preserving pairing of `lines` and `records` (one client
/// connection, one method and path) with the most pairs and, among those,
/// the most that agree on the backend.
///
/// With as many records as lines it is the pairing in order. When some are
/// missing, which ones is unknown (identical requests look alike), and a
/// pairing in order from the start would shift every later pair and count
/// them wrong; this one counts a record wrong only if no alignment explains
/// it. A dynamic program over prefixes: O(lines x records).
fn align(lines: &[&LbLogEntry], records: &[&RecordView]) -> Vec<(usize, usize)> {
    let (n, m) = (lines.len(), records.len());
    if n == m {
        return (0..n).map(|i| (i, i)).collect();
    }
    // best[i][j]: (pairs, agreeing pairs) over lines[..i] and records[..j].
    let mut best = vec![vec![(0usize, 0usize); m + 1]; n + 1];
    for i in 1..=n {
        for j in 1..=m {
            let (pairs, agree) = best[i - 1][j - 1];
            let take = (
                pairs + 1,
                agree + usize::from(!is_wrong(lines[i - 1], records[j - 1])),
            );
            best[i][j] = take.max(best[i - 1][j]).max(best[i][j - 1]);
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        if best[i][j] == best[i - 1][j] {
            i -= 1;
        } else if best[i][j] == best[i][j - 1] {
            j -= 1;
        } else {
            out.push((i - 1, j - 1));
            i -= 1;
            j -= 1;
        }
    }
    out.reverse();
    out
}

/// Whether `rec` decides a backend (mapped or exact) other than `log`'s
/// server or LB source address.
fn is_wrong(log: &LbLogEntry, rec: &RecordView) -> bool {
    let decided = matches!(rec.mapping.as_deref(), Some("mapped" | "exact"));
    let wrong_server = log.server.is_some() && rec.server != log.server;
    let wrong_src = log.backend_src.is_some() && rec.backend_src != log.backend_src;
    decided && (wrong_server || wrong_src)
}

/// Counts one matched pair.
fn judge(out: &mut Comparison, log: &LbLogEntry, rec: &RecordView) {
    out.matched_to_log += 1;
    match rec.mapping.as_deref() {
        Some("mapped") => out.mapped += 1,
        Some("exact") => out.exact += 1,
        _ => out.ambiguous += 1,
    }
    if is_wrong(log, rec) {
        out.wrong.push(WrongMapping {
            log: log.clone(),
            record: rec.clone(),
        });
    }
    let mut differ = |field: &'static str, log_value: String, record_value: String| {
        if log_value != record_value {
            out.mismatches.push(FieldMismatch {
                field,
                log: log_value,
                record: record_value,
                client: log.client,
                index: rec.index,
            });
        }
    };
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    differ(
        "status",
        show(log.status.map(|s| s.to_string())),
        show(rec.status.map(|s| s.to_string())),
    );
    differ("method", show(log.method.clone()), show(rec.method.clone()));
    differ(
        "path",
        show(log.path().map(str::to_owned)),
        show(rec.path.clone()),
    );
    differ(
        "host",
        show(log.host.as_deref().map(bare_host)),
        show(rec.domain.as_deref().map(bare_host)),
    );
}

/// A `Host` value without its port, lowercased: nginx's `$host` drops the
/// port and HAProxy's capture keeps it, and `url.domain` has none.
fn bare_host(host: &str) -> String {
    let host = host.trim();
    let without_port = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    without_port.to_ascii_lowercase()
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} logged requests, {} records: {} matched ({} mapped, {} exact, {} ambiguous), \
             {} wrong, {} missing, {} extra, {} field mismatches",
            self.total,
            self.records,
            self.matched_to_log,
            self.mapped,
            self.exact,
            self.ambiguous,
            self.wrong.len(),
            self.missing.len(),
            self.extra.len(),
            self.mismatches.len()
        )?;
        for w in self.wrong.iter().take(SHOWN) {
            writeln!(
                f,
                "  wrong: {} {} {} from {}: log says {} via {}, record #{} says {} via {}",
                show(w.log.method.as_ref()),
                show(w.log.uri.as_ref()),
                show(w.log.status.as_ref()),
                w.log.client,
                show(w.log.server.as_ref()),
                show(w.log.backend_src.as_ref()),
                w.record.index,
                show(w.record.server.as_ref()),
                show(w.record.backend_src.as_ref()),
            )?;
        }
        for m in self.missing.iter().take(SHOWN) {
            writeln!(
                f,
                "  missing: {} {} from {} (server {})",
                show(m.method.as_ref()),
                show(m.uri.as_ref()),
                m.client,
                show(m.server.as_ref())
            )?;
        }
        for e in self.extra.iter().take(SHOWN) {
            writeln!(
                f,
                "  extra: record #{} {} {} from {}",
                e.index,
                show(e.method.as_ref()),
                show(e.path.as_ref()),
                show(e.client.as_ref())
            )?;
        }
        for m in self.mismatches.iter().take(SHOWN) {
            writeln!(
                f,
                "  {} differs for record #{} from {}: log {:?}, record {:?}",
                m.field, m.index, m.client, m.log, m.record
            )?;
        }
        let listed = [
            self.wrong.len(),
            self.missing.len(),
            self.extra.len(),
            self.mismatches.len(),
        ];
        if listed.iter().any(|&n| n > SHOWN) {
            writeln!(f, "  (at most {SHOWN} of each kind listed)")?;
        }
        Ok(())
    }
}

fn show<T: fmt::Display>(value: Option<&T>) -> String {
    value.map_or_else(|| "-".to_owned(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn line(
        client: &str,
        method: &str,
        uri: &str,
        server: &str,
        src: &str,
        status: u16,
    ) -> LbLogEntry {
        LbLogEntry {
            client: client.parse().unwrap(),
            frontend: "192.0.2.1:80".parse().unwrap(),
            backend_src: Some(src.parse().unwrap()),
            server: Some(server.parse().unwrap()),
            termination: Some("----".into()),
            status: Some(status),
            method: Some(method.into()),
            uri: Some(uri.into()),
            version: Some("HTTP/1.1".into()),
            host: Some("shop.example:80".into()),
            backend_name: Some("be_app".into()),
            server_name: Some("s1".into()),
            server_ms: None,
            active_ms: None,
        }
    }

    fn record(l: &LbLogEntry, mapping: &str, start: &str) -> Value {
        let server = l.server.unwrap();
        let src = l.backend_src.unwrap();
        json!({
            "source": {"ip": l.client.ip().to_string(), "port": l.client.port(),
                       "nat": {"ip": src.ip().to_string(), "port": src.port()}},
            "destination": {"ip": "192.0.2.1", "port": 80,
                            "nat": {"ip": server.ip().to_string(), "port": server.port()}},
            "http": {"request": {"method": l.method.clone()},
                     "response": {"status_code": l.status}},
            "url": {"path": l.path(), "domain": "shop.example"},
            "event": {"start": start},
            "lbwitness": {"backend": {"mapping": mapping}},
        })
    }

    #[test]
    fn perfect_run_with_identical_requests_on_one_connection() {
        let log = vec![
            line(
                "192.0.2.10:1000",
                "GET",
                "/same?q=1",
                "198.51.100.2:8080",
                "198.51.100.1:5000",
                200,
            ),
            line(
                "192.0.2.10:1000",
                "GET",
                "/same?q=1",
                "198.51.100.6:8080",
                "198.51.100.5:5001",
                200,
            ),
            line(
                "192.0.2.11:1000",
                "POST",
                "/r/2",
                "198.51.100.6:8080",
                "198.51.100.5:5002",
                503,
            ),
        ];
        // Given out of order: start times put them back.
        let records = vec![
            record(&log[1], "mapped", "2026-12-02T07:00:00.002Z"),
            record(&log[2], "exact", "2026-12-02T07:00:00.001Z"),
            record(&log[0], "mapped", "2026-12-02T07:00:00.001Z"),
        ];
        let c = compare(&log, &records);
        assert!(c.is_perfect(), "{c}");
        assert_eq!((c.total, c.matched_to_log, c.mapped, c.exact), (3, 3, 2, 1));
        assert!((c.mapped_share() - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn wrong_missing_extra_and_mismatches() {
        let log = vec![
            line(
                "192.0.2.10:1000",
                "GET",
                "/a",
                "198.51.100.2:8080",
                "198.51.100.1:5000",
                200,
            ),
            line(
                "192.0.2.10:1000",
                "GET",
                "/b",
                "198.51.100.6:8080",
                "198.51.100.5:5001",
                404,
            ),
            line(
                "192.0.2.12:7",
                "GET",
                "/c",
                "198.51.100.6:8080",
                "198.51.100.5:5001",
                200,
            ),
        ];
        // Swapped backends on /a: wrong. /b ambiguous with the wrong status.
        let mut wrong = record(&log[0], "mapped", "1");
        wrong["destination"]["nat"]["ip"] = json!("198.51.100.10");
        let mut ambiguous = record(&log[1], "ambiguous", "2");
        ambiguous["http"]["response"]["status_code"] = json!(500);
        ambiguous["destination"]["nat"]["ip"] = json!("198.51.100.10");
        let mut stray = record(&log[0], "mapped", "3");
        stray["url"]["path"] = json!("/never");
        let c = compare(&log, &[wrong, ambiguous, stray]);
        assert_eq!(c.matched_to_log, 2);
        assert_eq!(c.wrong.len(), 1, "{c}");
        assert_eq!(c.wrong[0].record.index, 0);
        assert_eq!(c.ambiguous, 1);
        assert_eq!(c.missing.len(), 1);
        assert_eq!(c.missing[0].uri.as_deref(), Some("/c"));
        assert_eq!(c.extra.len(), 1);
        assert_eq!(c.extra[0].path.as_deref(), Some("/never"));
        assert_eq!(c.mismatches.len(), 1);
        assert_eq!(c.mismatches[0].field, "status");
        assert!(!c.is_perfect());
        let text = c.to_string();
        assert!(
            text.contains("1 wrong, 1 missing, 1 extra, 1 field mismatches"),
            "{text}"
        );
        assert!(
            text.contains("wrong: GET /a 200 from 192.0.2.10:1000"),
            "{text}"
        );
    }

    #[test]
    fn dotted_fields_and_host_ports() {
        let value = json!({"source.ip": "192.0.2.10", "source": {"port": 9, "nat.ip": "198.51.100.1", "nat.port": 4},
                           "url.domain": "Shop.Example"});
        let view = RecordView::new(0, &value);
        assert_eq!(view.client, Some("192.0.2.10:9".parse().unwrap()));
        assert_eq!(view.backend_src, Some("198.51.100.1:4".parse().unwrap()));
        assert_eq!(view.domain.as_deref(), Some("Shop.Example"));
        assert_eq!(bare_host("Shop.Example:8080"), "shop.example");
        assert_eq!(bare_host("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(bare_host("2001:db8::1"), "2001:db8::1");
        assert_eq!(compare(&[], &[]).mapped_share(), 0.0);
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Identical requests on few client ports, records shuffled:
            /// the records made from the log always match it perfectly, and
            /// without one of them exactly that line is missing.
            #[test]
            fn records_from_the_log_match_it(
                lines in proptest::collection::vec((0u16..3, 0u8..2, 0u8..3), 1..40),
                seed in any::<u64>(),
                drop_one in any::<proptest::sample::Index>(),
            ) {
                let log: Vec<LbLogEntry> = lines
                    .iter()
                    .map(|(port, path, server)| {
                        line(
                            &format!("192.0.2.10:{}", 1000 + port),
                            "GET",
                            &format!("/p{path}"),
                            &format!("198.51.100.{}:8080", 4 * server + 2),
                            &format!("198.51.100.{}:5000", 4 * server + 1),
                            200,
                        )
                    })
                    .collect();
                let mut records: Vec<Value> = log
                    .iter()
                    .enumerate()
                    .map(|(i, l)| record(l, "mapped", &format!("{i:06}")))
                    .collect();
                // A deterministic shuffle.
                let n = records.len();
                for i in 0..n {
                    let j = (seed.wrapping_mul(i as u64 + 1).rotate_left(17) as usize) % n;
                    records.swap(i, j);
                }
                let c = compare(&log, &records);
                prop_assert!(c.is_perfect(), "{}", c);
                let gone = drop_one.index(n);
                records.remove(gone);
                let c = compare(&log, &records);
                prop_assert_eq!(c.missing.len(), 1);
                prop_assert!(c.wrong.is_empty() && c.extra.is_empty(), "{}", c);
                prop_assert_eq!(c.matched_to_log, n - 1);
            }
        }
    }
}

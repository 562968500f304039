//! The dotted names of the fields a record can carry, for settings that
//! name one (a group's `hash_field`): a typo must be refused, not hash
//! every record to the same absent key.

/// Every leaf field a record can carry, as its JSON line writes it
/// (arrays count as leaves), sorted. Left out: the counter maps under
/// `lbwitness.agent` and `lbwitness.kernel` (their members are counter
/// names, not record fields) and `destination.packets` (flows are one-way:
/// only `source.*` counts; a connection record's `destination.bytes` is
/// what its destination sent).
pub const PATHS: &[&str] = &[
    "@timestamp",
    "agent.id",
    "agent.type",
    "agent.version",
    "destination.bytes",
    "destination.ip",
    "destination.nat.ip",
    "destination.nat.port",
    "destination.port",
    "error.code",
    "error.message",
    "event.action",
    "event.category",
    "event.dataset",
    "event.duration",
    "event.end",
    "event.hash",
    "event.kind",
    "event.module",
    "event.outcome",
    "event.reason",
    "event.sequence",
    "event.start",
    "event.type",
    "file.directory",
    "file.hash.sha256",
    "file.mtime",
    "file.name",
    "file.path",
    "file.size",
    "http.request.bytes",
    "http.request.method",
    "http.response.bytes",
    "http.response.status_code",
    "http.version",
    "lbwitness.backend.candidates",
    "lbwitness.backend.duration",
    "lbwitness.backend.mapping",
    "lbwitness.backend.reason",
    "lbwitness.capture.xdp_mode",
    "lbwitness.checkpoint.count",
    "lbwitness.checkpoint.final",
    "lbwitness.checkpoint.first_sequence",
    "lbwitness.checkpoint.head_hash",
    "lbwitness.checkpoint.key_id",
    "lbwitness.checkpoint.last_sequence",
    "lbwitness.checkpoint.next_key.key_id",
    "lbwitness.checkpoint.next_key.public_key",
    "lbwitness.checkpoint.signature",
    "lbwitness.config.applied",
    "lbwitness.config.error",
    "lbwitness.config.path",
    "lbwitness.config.previous_sha256",
    "lbwitness.config.restart_required",
    "lbwitness.config.sha256",
    "lbwitness.connection.backends",
    "lbwitness.connection.closed_by",
    "lbwitness.connection.requests",
    "lbwitness.connection.reset",
    "lbwitness.connection.retransmits",
    "lbwitness.connection.role",
    "lbwitness.file.attribution",
    "lbwitness.file.change",
    "lbwitness.file.previous_sha256",
    "lbwitness.file.previous_size",
    "lbwitness.file.unreadable",
    "lbwitness.gap.before_hash",
    "lbwitness.gap.class",
    "lbwitness.gap.count",
    "lbwitness.gap.first_sequence",
    "lbwitness.gap.last_hash",
    "lbwitness.gap.last_sequence",
    "lbwitness.gap.previous_run.clean",
    "lbwitness.gap.previous_run.durable_sequence",
    "lbwitness.gap.previous_run.last_hash",
    "lbwitness.gap.previous_run.last_sequence",
    "lbwitness.gap.reason",
    "lbwitness.gap.source",
    "lbwitness.hook.ifindex",
    "lbwitness.hook.interface",
    "lbwitness.hook.kind",
    "lbwitness.hook.mode",
    "lbwitness.icmp.code",
    "lbwitness.icmp.type",
    "lbwitness.key.key_id",
    "lbwitness.key.previous_key_id",
    "lbwitness.privacy.fields",
    "lbwitness.privacy.key_id",
    "lbwitness.privacy.pseudonymised",
    "lbwitness.start.capture",
    "lbwitness.start.config_sha256",
    "lbwitness.start.hooks",
    "lbwitness.start.interfaces",
    "lbwitness.start.key_id",
    "lbwitness.start.previous_chain.agent_id",
    "lbwitness.start.previous_chain.reason",
    "lbwitness.start.pseudonyms.keep_networks",
    "lbwitness.start.pseudonyms.key_id",
    "lbwitness.start.pseudonyms.local_addresses",
    "lbwitness.start.version",
    "lbwitness.start.watch_problems",
    "lbwitness.start.watched_files",
    "lbwitness.stop.records",
    "lbwitness.stop.signal",
    "lbwitness.tcp_flags",
    "lbwitness.watch.error",
    "lbwitness.watch.paths",
    "network.bytes",
    "network.community_id",
    "network.iana_number",
    "network.inner.vlan.id",
    "network.packets",
    "network.transport",
    "network.type",
    "network.vlan.id",
    "observer.hostname",
    "observer.ingress.interface.id",
    "observer.ingress.interface.name",
    "observer.product",
    "observer.type",
    "process.executable",
    "process.name",
    "process.pid",
    "process.thread.id",
    "source.bytes",
    "source.ip",
    "source.nat.ip",
    "source.nat.port",
    "source.packets",
    "source.port",
    "url.domain",
    "url.path",
    "url.query",
    "user.id",
    "user.name",
    "user_agent.original",
];

/// Whether a record can carry the field `path`.
pub fn is_field(path: &str) -> bool {
    PATHS.binary_search(&path).is_ok()
}

/// The known field closest to `path` in edit distance, when it is close
/// enough to be the one meant (a typo such as `source.ipp`).
pub fn closest(path: &str) -> Option<&'static str> {
    PATHS
        .iter()
        .map(|p| (distance(path, p), *p))
        .min()
        .filter(|(d, _)| *d <= 2.max(path.len() / 5))
        .map(|(_, p)| p)
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_are_refused_with_a_suggestion() {
        assert!(is_field("source.ip") && is_field("network.community_id"));
        for typo in [
            "source.ipp",
            "sourceip",
            "source",
            "src.ip",
            "",
            "destination.packets",
        ] {
            assert!(!is_field(typo), "{typo}");
        }
        assert_eq!(closest("source.ipp"), Some("source.ip"));
        assert_eq!(closest("network.communityid"), Some("network.community_id"));
        assert_eq!(closest("nothing.like.it"), None);
    }
}

//! What a validated config would make the agent do, in a few lines: the
//! output of `lbwitness config check`.

use std::fmt::Write as _;

use lbwitness_delivery::{balance::Strategy, sink::syslog::Transport};

use super::{
    Config,
    delivery::{EndpointSettings, GroupConfig},
};

/// The summary of `config`, one line per concern, ending in a newline.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let source = config
        .path
        .as_ref()
        .map_or_else(|| "no config file".to_owned(), |p| p.display().to_string());
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("{source}: valid (sha256 {})", config.sha256));
    line(format!(
        "capture: XDP ({}) on {}; flow table {} entries, ring buffer {} bytes",
        words(&config.xdp_mode),
        config.interfaces.join(", "),
        config.flow_table_entries,
        config.ring_buffer_bytes
    ));
    line(format!(
        "flows: active timeout {} s, idle {} s, closed {} s, sweep every {} ms, lifecycle records {}",
        config.timeouts.active.as_secs(),
        config.timeouts.idle.as_secs(),
        config.timeouts.closed.as_secs(),
        config.sweep_interval.as_millis(),
        if config.lifecycle_records {
            "on"
        } else {
            "off"
        }
    ));
    let audit = &config.audit;
    line(format!(
        "audit: signing key {} (made on first start when missing), a checkpoint every {} records or {} s",
        audit.signing_key.display(),
        audit.checkpoint_records,
        audit.checkpoint_interval.as_secs()
    ));
    line(privacy_line(config));
    if !audit.watch_files.is_empty() {
        let files: Vec<_> = audit
            .watch_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        line(format!("watch: {}", files.join(", ")));
    }
    let spool = &config.delivery.spool;
    line(format!(
        "state: {}; spool {} (at most {} bytes in {}-byte segments, when full {}, fsync {})",
        config.state_dir.display(),
        spool.dir.display(),
        spool.max_bytes,
        spool.segment_bytes,
        words(&spool.on_full),
        words(&spool.fsync)
    ));
    for group in &config.delivery.groups {
        line(group_line(group));
    }
    let d = &config.delivery;
    for route in &d.routes {
        let mut fields: Vec<_> = route.matches.keys().map(String::as_str).collect();
        if fields.is_empty() {
            fields.push("every record");
        }
        line(format!(
            "route {}: {} -> {}",
            route.name,
            fields.join(", "),
            route.groups.join(", ")
        ));
    }
    line(format!(
        "unrouted records -> {}",
        d.routing.default.join(", ")
    ));
    for warning in d.router().warnings() {
        line(format!("warning: {warning}"));
    }
    out
}

fn privacy_line(config: &Config) -> String {
    let p = &config.privacy;
    if !p.pseudonymise_clients {
        return "privacy: client addresses shown as they are".into();
    }
    let mut kept = vec!["this host's addresses".to_owned()];
    kept.extend(p.keep_networks.iter().map(ToString::to_string));
    format!(
        "privacy: client addresses pseudonymised in every record (key {}, made on first start when missing); shown as they are: {}",
        config
            .state_dir
            .join(crate::privacy::key::FILE_NAME)
            .display(),
        kept.join(", ")
    )
}

fn group_line(g: &GroupConfig) -> String {
    let spec = &g.spec;
    let mut text = format!("group {}: {}", spec.name, words(&spec.strategy));
    if spec.strategy == Strategy::ConsistentHash
        && let Some(field) = &spec.hash_field
    {
        // Writing to a String cannot fail.
        let _ = write!(text, " on {field} (load factor {})", spec.load_factor);
    }
    let endpoints: Vec<_> = g.endpoints.iter().map(endpoint).collect();
    let _ = write!(text, " over {}", endpoints.join(", "));
    text
}

/// An endpoint as a URL-like name.
fn endpoint(e: &EndpointSettings) -> String {
    match e {
        EndpointSettings::Stdout => "standard output".into(),
        EndpointSettings::File(f) => match &f.rotation {
            None => format!("file {}", f.path.display()),
            Some(r) => format!("file {} ({})", f.path.display(), rotation(r)),
        },
        EndpointSettings::Syslog(s) => {
            let scheme = match (s.transport, s.tls.is_some()) {
                (Transport::Tcp, _) => "syslog+tcp",
                (Transport::Tls, _) => "syslog+tls",
                (Transport::Relp, false) => "syslog+relp",
                (Transport::Relp, true) => "syslog+relp+tls",
            };
            format!("{scheme}://{}", s.address)
        }
        EndpointSettings::Nats(n) => format!(
            "nats {} (subject {}{})",
            n.urls.join(","),
            n.subject,
            n.stream
                .as_ref()
                .map(|s| format!(", stream {s}"))
                .unwrap_or_default()
        ),
    }
}

/// A unit enum's value as the config writes it: `DropNewest` is
/// `drop_newest`.
fn words(value: &impl std::fmt::Debug) -> String {
    let mut out = String::new();
    for (i, c) in format!("{value:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A rotation table in words, e.g. `rotated at 100000000 bytes or 86400 s, 7 kept`.
fn rotation(r: &lbwitness_delivery::sink::file::Rotation) -> String {
    let mut when = Vec::new();
    if let Some(n) = r.max_bytes {
        when.push(format!("{n} bytes"));
    }
    if let Some(n) = r.max_age_secs {
        when.push(format!("{n} s"));
    }
    let kept = match r.keep {
        Some(n) => format!("{n} kept"),
        None => "all kept".into(),
    };
    format!("rotated at {}, {kept}", when.join(" or "))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Overrides;

    #[test]
    fn says_what_the_agent_would_do() {
        let text = "[capture]\ninterfaces = [\"eth1\", \"eth2\"]\n\
            [[groups]]\nname = \"siem\"\nkind = \"syslog\"\nstrategy = \"consistent_hash\"\n\
            hash_field = \"source.ip\"\n\
            [[groups.endpoints]]\naddress = \"siem-a.example:2514\"\n\
            [[groups.endpoints]]\naddress = \"siem-b.example:6514\"\ntransport = \"tcp\"\n\
            [[groups]]\nname = \"archive\"\nkind = \"nats\"\n\
            [[groups.endpoints]]\nurls = [\"nats://n1:4222\", \"nats://n2:4222\"]\nstream = \"LBW\"\n\
            [[routes]]\nname = \"security\"\ngroups = [\"siem\"]\n\
            [routes.match]\n\"event.action\" = [\"tcp-rst\", \"nope\"]\n\
            [routing]\ndefault = [\"archive\"]\n";
        let config =
            Config::from_text(Path::new("/etc/lbw.toml"), text, Overrides::default()).unwrap();
        let text = summary(&config);
        for needle in [
            "/etc/lbw.toml: valid (sha256 ",
            "capture: XDP (auto) on eth1, eth2;",
            "signing key /var/lib/lbwitness/signing.key",
            "privacy: client addresses shown as they are",
            "spool /var/lib/lbwitness/spool",
            "when full drop_newest, fsync always",
            "group siem: consistent_hash on source.ip (load factor 1.25) over \
             syslog+relp://siem-a.example:2514, syslog+tcp://siem-b.example:6514",
            "group archive: round_robin over nats nats://n1:4222,nats://n2:4222 \
             (subject lbwitness.audit, stream LBW)",
            "route security: event.action -> siem",
            "unrouted records -> archive",
            "warning: ",
        ] {
            assert!(text.contains(needle), "no {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn pseudonyms_are_named_with_what_is_kept() {
        let config = Config::from_text(
            Path::new("t.toml"),
            "[capture]\ninterfaces = [\"a\"]\n[privacy]\npseudonymise_clients = true\n\
             keep_networks = [\"198.51.100.0/24\"]\n",
            Overrides::default(),
        )
        .unwrap();
        let text = summary(&config);
        assert!(
            text.contains(
                "privacy: client addresses pseudonymised in every record (key \
                 /var/lib/lbwitness/pseudonym.key, made on first start when missing); shown \
                 as they are: this host's addresses, 198.51.100.0/24"
            ),
            "{text}"
        );
    }

    #[test]
    fn without_groups_the_output_file_is_the_group() {
        let config = Config::from_text(
            Path::new("t.toml"),
            "output = \"/tmp/r.ndjson\"\n[capture]\ninterfaces = [\"a\"]\n",
            Overrides::default(),
        )
        .unwrap();
        let text = summary(&config);
        assert!(
            text.contains("group output: failover over file /tmp/r.ndjson"),
            "{text}"
        );
    }
}

//! SIGHUP: re-read the config, apply what can change while running (the
//! checkpoint cadence and the signing key), and say what needs a restart.

use std::time::SystemTime;

use lbwitness_trail::{keys, record::audit::ConfigReload};

use crate::{
    audit::{Control, records::AuditRecords},
    config::{Config, Overrides},
};

/// Reloads the config `running` came from. `running` is updated with what
/// was applied; the returned message records the reload and carries the
/// changes to the audit stage.
pub fn reload(running: &mut Config, overrides: &Overrides, records: &AuditRecords) -> Control {
    let mut reload = ConfigReload {
        applied: Vec::new(),
        error: None,
        path: running
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        previous_sha256: running.sha256.clone(),
        restart_required: Vec::new(),
        sha256: running.sha256.clone(),
    };
    let (key, cadence) = match apply(running, overrides, &mut reload) {
        Ok(changes) => changes,
        Err(error) => {
            tracing::error!(%error, "config reload refused; the running config stays");
            reload.error = Some(error);
            (None, None)
        }
    };
    tracing::info!(applied = ?reload.applied, restart_required = ?reload.restart_required, "config reloaded");
    Control::Reload {
        record: Box::new(records.config_reload(SystemTime::now(), reload)),
        key,
        cadence,
    }
}

type Changes = (
    Option<Box<ed25519_dalek::SigningKey>>,
    Option<(u64, std::time::Duration)>,
);

fn apply(
    running: &mut Config,
    overrides: &Overrides,
    reload: &mut ConfigReload,
) -> Result<Changes, String> {
    let new =
        Config::load(running.path.as_deref(), overrides.clone()).map_err(|e| e.to_string())?;
    reload.sha256 = new.sha256.clone();
    // The key file is read again even when its path did not change: an
    // operator rotates by replacing the file and sending SIGHUP.
    let key = keys::load(&new.audit.signing_key).map_err(|e| e.to_string())?;
    let mut cadence = None;
    if (new.audit.checkpoint_records, new.audit.checkpoint_interval)
        != (
            running.audit.checkpoint_records,
            running.audit.checkpoint_interval,
        )
    {
        cadence = Some((new.audit.checkpoint_records, new.audit.checkpoint_interval));
        reload.applied.push("audit.checkpoint");
    }
    if new.audit.signing_key != running.audit.signing_key {
        reload.applied.push("audit.signing_key");
    }
    let restart = [
        ("state_dir", new.state_dir != running.state_dir),
        ("output", new.output != running.output),
        ("capture.interfaces", new.interfaces != running.interfaces),
        ("capture.xdp_mode", new.xdp_mode != running.xdp_mode),
        (
            "capture.flow_table_entries",
            new.flow_table_entries != running.flow_table_entries,
        ),
        (
            "capture.ring_buffer_bytes",
            new.ring_buffer_bytes != running.ring_buffer_bytes,
        ),
        ("capture.bpffs", new.bpffs != running.bpffs),
        (
            "flows",
            new.timeouts != running.timeouts || new.sweep_interval != running.sweep_interval,
        ),
        (
            "flows.lifecycle_records",
            new.lifecycle_records != running.lifecycle_records,
        ),
        (
            "audit.watch_files",
            new.audit.watch_files != running.audit.watch_files,
        ),
        // Every record builder holds the pseudonymiser made at start.
        ("privacy", new.privacy != running.privacy),
        // Groups own durable ack state in the spool; changing them while
        // records are in flight is done by a restart, which re-reads it.
        (
            "spool, groups, routes",
            format!("{:?}", new.delivery) != format!("{:?}", running.delivery),
        ),
    ];
    reload.restart_required = restart
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect();
    running.audit.signing_key = new.audit.signing_key;
    running.audit.checkpoint_records = new.audit.checkpoint_records;
    running.audit.checkpoint_interval = new.audit.checkpoint_interval;
    running.sha256 = new.sha256;
    Ok((Some(Box::new(key)), cadence))
}

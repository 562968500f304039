//! Where the chain continues: the state directory (locked), the signing
//! key, the spool's tail and the head file, settled into one identity
//! before anything can produce a record.

use lbwitness_trail::{chain::Head, checkpoint::Signer, keys, record::audit::PreviousChain};
use tracing::info;

use super::delivery::{self, Opened};
use crate::{
    audit::{
        identity::StateDir,
        state::{self, HeadFile, Resume},
    },
    config::Config,
};

/// The chain's state at start.
pub(super) struct Resumed {
    /// The state directory; its lock is held while this lives.
    pub(super) state_dir: StateDir,
    /// Signs the checkpoints.
    pub(super) signer: Signer,
    /// The spool, recovered, and the collectors' connectors.
    pub(super) opened: Opened,
    /// The head file, written ahead of every batch.
    pub(super) head_file: HeadFile,
    /// The chain's agent id.
    pub(super) agent_id: &'static str,
    /// Where the chain continues.
    pub(super) resume: Resume,
    /// The chain this one replaced, named until the new chain's first
    /// records are out.
    pub(super) previous_chain: Option<PreviousChain>,
}

impl Resumed {
    /// Locks the state directory, loads (or makes) the signing key, opens
    /// the spool and the head file and settles the identity. `new_chain`
    /// is `--new-chain`.
    pub(super) fn open(config: &Config, new_chain: bool) -> anyhow::Result<Self> {
        let state_dir = StateDir::open(&config.state_dir)?;
        let signer = load_signer(config)?;
        // The spool says where the chain really ended: records past its
        // last intact one never reached a collector.
        let opened = delivery::open(config, state_dir.agent_id())?;
        let (mut head_file, persisted) = HeadFile::open(&config.state_dir)?;
        let spool_records = opened.tail.is_none_or(|t| t.head.sequence > 0);
        let settled = state_dir.settle(&mut head_file, persisted, spool_records, new_chain)?;
        // One id for the whole run, shared by every stage.
        let agent_id: &'static str = Box::leak(settled.agent_id.into_boxed_str());
        let resume = state::resume(settled.persisted, opened.tail);
        let previous_chain = settled
            .previous_chain
            .filter(|_| resume.head == Head::GENESIS);
        info!(
            agent_id,
            sequence = resume.head.sequence,
            "audit chain resumed"
        );
        Ok(Self {
            state_dir,
            signer,
            opened,
            head_file,
            agent_id,
            resume,
            previous_chain,
        })
    }
}

/// The checkpoint signer, with a new key made on first start.
fn load_signer(config: &Config) -> anyhow::Result<Signer> {
    let (key, made) = keys::load_or_generate(&config.audit.signing_key)?;
    let signer = Signer::new(key);
    if made {
        info!(
            key = %config.audit.signing_key.display(),
            public = %keys::public_path(&config.audit.signing_key).display(),
            key_id = signer.key_id(),
            "made a new checkpoint signing key; give its public half to whoever verifies the trail"
        );
    }
    Ok(signer)
}

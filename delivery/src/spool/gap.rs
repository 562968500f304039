//! How a spool loss appears in the trail: the `lbwitness.gap` of the gap
//! record the agent's audit stage seals for it (docs/AUDIT.md).

use lbwitness_trail::record::audit::Gap;

use super::Loss;

impl Loss {
    /// `lbwitness.gap` of the record that declares this loss: exact count,
    /// the range, and the chain hashes on either side where the spool
    /// still showed them.
    pub fn gap(&self) -> Gap {
        Gap {
            before_hash: self.before_hash.map(hex::encode),
            class: "loss",
            count: self.count,
            first_sequence: Some(self.first),
            last_hash: self.last_hash.map(hex::encode),
            last_sequence: Some(self.last),
            previous_run: None,
            reason: self.reason.as_str(),
            source: "agent",
        }
    }
}

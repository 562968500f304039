//! The two-namespace lab the agent tests share: a client and a load
//! balancer joined by a veth pair (client 192.0.2.1 / 2001:db8::1, lb
//! 192.0.2.2 / 2001:db8::2). The agent always runs in `lb`, on `iface()`.

use crate::{
    agent::{Agent, has_xdp},
    netns::{NetNs, VethPair, require_root},
};

/// The lab. Dropping it deletes the pair, then the namespaces.
pub struct Lab {
    // First, so the pair is deleted before its namespaces.
    /// The veth pair; `b` is the load balancer's end.
    pub veth: VethPair,
    /// The client namespace.
    pub client: NetNs,
    /// The load balancer's namespace.
    pub lb: NetNs,
}

impl Lab {
    /// A lab whose namespace names start with `tag`.
    ///
    /// # Panics
    /// When not root, or when `ip` fails.
    pub fn new(tag: &str) -> Self {
        require_root();
        let client = NetNs::new(&format!("{tag}-cl"));
        let lb = NetNs::new(&format!("{tag}-lb"));
        let veth = VethPair::with_default_addrs(&client, &lb);
        Self { veth, client, lb }
    }

    /// The lb end of the veth, where the agent attaches.
    pub fn iface(&self) -> &str {
        &self.veth.b.name
    }

    /// Starts the agent on `iface()` with a fresh output and state.
    pub fn start_agent(&self, extra: &[&str]) -> Agent {
        Agent::start(&self.lb, self.iface(), extra)
    }

    /// Whether `iface()` has an XDP program attached.
    pub fn has_xdp(&self) -> bool {
        has_xdp(&self.lb, self.iface())
    }
}

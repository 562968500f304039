//! The load-balancer lab's network: a client namespace with several
//! addresses, the load balancer's namespace, and one namespace per backend,
//! each on its own veth to the LB.
//!
//! ```text
//!  client ns                 lb ns                       backend ns i
//!  192.0.2.10-.13/24 ── veth ── 192.0.2.1/24
//!                               198.51.100.(4i+1)/30 ── veth ── 198.51.100.(4i+2)/30
//! ```
//!
//! Nothing is routed: the client talks only to the frontend address and
//! the LB to each backend on that backend's own /30.

use std::net::{IpAddr, Ipv4Addr};

use crate::netns::{NetNs, VethEnd, VethPair, require_root};

/// The LB's address toward the clients, where frontends listen.
pub const FRONTEND_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// The client namespace's first address; the others follow it.
pub const FIRST_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// One backend's namespace and the /30 joining it to the LB.
#[derive(Debug)]
pub struct BackendNet {
    /// Its namespace.
    pub ns: NetNs,
    /// The LB's address on this link (`198.51.100.(4i+1)`).
    pub lb_side: Ipv4Addr,
    /// The backend's address (`198.51.100.(4i+2)`).
    pub addr: Ipv4Addr,
}

/// The namespaces and links. Dropping it deletes the links, then the
/// namespaces.
#[derive(Debug)]
pub struct Topology {
    // Links first: fields drop in order, and each link must go before the
    // namespaces that hold its ends.
    links: Vec<VethPair>,
    /// The client namespace.
    pub client: NetNs,
    /// The client addresses, [`FIRST_CLIENT_IP`] and those after it.
    pub client_ips: Vec<IpAddr>,
    /// The load balancer's namespace.
    pub lb: NetNs,
    /// The backends' namespaces.
    pub backends: Vec<BackendNet>,
}

impl Topology {
    /// `clients` client addresses (1 to 100) and `backends` backend
    /// namespaces (1 to 60); names start with `tag`.
    ///
    /// # Panics
    /// When not root, when a count is out of range, or when `ip` fails.
    #[track_caller]
    pub fn new(tag: &str, clients: u8, backends: u8) -> Self {
        require_root();
        assert!((1..=100).contains(&clients), "clients: 1 to 100");
        assert!((1..=60).contains(&backends), "backends: 1 to 60");
        let client = NetNs::new(&format!("{tag}-cl"));
        let lb = NetNs::new(&format!("{tag}-lb"));
        let mut links = Vec::new();
        let [a, b, c, first] = FIRST_CLIENT_IP.octets();
        let client_ips: Vec<IpAddr> = (0..clients)
            .map(|i| IpAddr::V4(Ipv4Addr::new(a, b, c, first + i)))
            .collect();
        let front = VethPair::new(
            Some(&lb),
            &client,
            VethEnd::new().ipv4(FRONTEND_IP, 24),
            VethEnd::new().ipv4(FIRST_CLIENT_IP, 24),
        );
        let client_if = front.b.name.clone();
        links.push(front);
        for ip in &client_ips[1..] {
            client.ip(&["addr", "add", &format!("{ip}/24"), "dev", &client_if]);
        }
        let mut nets = Vec::new();
        for i in 0..backends {
            let ns = NetNs::new(&format!("{tag}-be{i}"));
            let lb_side = Ipv4Addr::new(198, 51, 100, 4 * i + 1);
            let addr = Ipv4Addr::new(198, 51, 100, 4 * i + 2);
            links.push(VethPair::new(
                Some(&lb),
                &ns,
                VethEnd::new().ipv4(lb_side, 30),
                VethEnd::new().ipv4(addr, 30),
            ));
            nets.push(BackendNet { ns, lb_side, addr });
        }
        Self {
            links,
            client,
            client_ips,
            lb,
            backends: nets,
        }
    }

    /// Every namespace's name: client, lb, then the backends.
    pub fn namespace_names(&self) -> Vec<String> {
        [&self.client, &self.lb]
            .into_iter()
            .chain(self.backends.iter().map(|b| &b.ns))
            .map(|ns| ns.name().to_owned())
            .collect()
    }

    /// The LB's interface toward the clients.
    pub fn frontend_iface(&self) -> &str {
        &self.links[0].a.name
    }

    /// The LB's interfaces toward the backends, in backend order.
    pub fn backend_ifaces(&self) -> Vec<&str> {
        self.links[1..].iter().map(|l| l.a.name.as_str()).collect()
    }
}

//! The socket table: which connection a traced process's fd is, with its
//! tuple and role, never trusting a reused fd or socket address.
//!
//! A connection is known by a number of its own ([`ConnId`]), not by fd or
//! socket address: both are reused. An fd that shows up with a different
//! socket than before was closed and reopened behind our back (lost
//! events), so the old connection ends there. Tuples come from
//! `inet_sock_set_state` at ESTABLISHED, which can fire before the process
//! touches the socket (the passive side's handshake completes in softirq),
//! so they wait in [`Tuples`] until a process claims the socket.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use super::input::TcpState;

/// A connection's own number: unique for the life of the agent.
pub type ConnId = u64;

/// A connection's two ends, as this host sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ends {
    /// This host's end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
}

/// What a connection is to the load balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepted: a client's connection to a frontend.
    Client,
    /// Opened: the load balancer's connection to a backend.
    Backend,
}

impl Role {
    /// The record's `lbwitness.connection.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client-side",
            Self::Backend => "backend-side",
        }
    }
}

/// A socket's tuple and how it was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    /// Both ends.
    pub ends: Ends,
    /// Accepted (the handshake came from SYN_RECV) or opened (from SYN_SENT).
    pub role: Role,
    /// Kernel ns of ESTABLISHED.
    pub established: u64,
}

/// Most tuples kept for sockets no traced process has claimed yet: every
/// TCP connection on the host reaches ESTABLISHED through the same
/// tracepoint, and most belong to other processes.
pub const UNCLAIMED_TUPLES: usize = 65_536;

/// Tuples by socket address, bounded: the oldest unclaimed one goes first.
#[derive(Debug, Default)]
pub struct Tuples {
    by_sk: HashMap<u64, Tuple>,
    /// Unclaimed accepted sockets by their peer's address, for an accept
    /// that names the peer but not the socket (no kprobe on
    /// inet_csk_accept): usually one, a few when one client port reached
    /// several of this host's addresses.
    by_peer: HashMap<SocketAddr, Vec<u64>>,
    /// Insertion order, for eviction; may hold sockets already removed.
    order: VecDeque<u64>,
    evicted: u64,
}

impl Tuples {
    /// Notes a state change. Returns the tuple when the socket became
    /// ESTABLISHED from a state that tells its role.
    pub fn on_state(&mut self, sk: u64, old: TcpState, new: TcpState, ends: Ends, t: u64) {
        if new != TcpState::Established {
            return;
        }
        let role = match old {
            TcpState::SynRecv | TcpState::NewSynRecv => Role::Client,
            TcpState::SynSent => Role::Backend,
            _ => return,
        };
        let tuple = Tuple {
            ends,
            role,
            established: t,
        };
        match self.by_sk.insert(sk, tuple) {
            None => self.order.push_back(sk),
            Some(old) => self.unindex(sk, &old),
        }
        if role == Role::Client {
            self.by_peer.entry(ends.remote).or_default().push(sk);
        }
        while self.by_sk.len() > UNCLAIMED_TUPLES {
            match self.order.pop_front() {
                Some(old) => {
                    if self.remove(old).is_some() {
                        self.evicted += 1;
                    }
                }
                None => break,
            }
        }
    }

    /// The one unclaimed accepted socket whose peer is `peer`, if exactly
    /// one is.
    pub fn accepted_from(&self, peer: SocketAddr) -> Option<u64> {
        match self.by_peer.get(&peer).map(Vec::as_slice) {
            Some(&[sk]) => Some(sk),
            _ => None,
        }
    }

    fn remove(&mut self, sk: u64) -> Option<Tuple> {
        let tuple = self.by_sk.remove(&sk)?;
        self.unindex(sk, &tuple);
        Some(tuple)
    }

    fn unindex(&mut self, sk: u64, tuple: &Tuple) {
        if tuple.role != Role::Client {
            return;
        }
        if let Some(sks) = self.by_peer.get_mut(&tuple.ends.remote) {
            sks.retain(|&s| s != sk);
            if sks.is_empty() {
                self.by_peer.remove(&tuple.ends.remote);
            }
        }
    }

    /// Takes the tuple of `sk`, if its ESTABLISHED was seen.
    pub fn claim(&mut self, sk: u64) -> Option<Tuple> {
        let tuple = self.remove(sk);
        if self.order.len() > 2 * self.by_sk.len() + 1024 {
            let live = &self.by_sk;
            self.order.retain(|sk| live.contains_key(sk));
        }
        tuple
    }

    /// Forgets `sk` (it was destroyed before anyone claimed it).
    pub fn forget(&mut self, sk: u64) {
        self.remove(sk);
    }

    /// Unclaimed tuples dropped to stay within [`UNCLAIMED_TUPLES`].
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

/// Which connection each (process, fd) and each socket is.
#[derive(Debug, Default)]
pub struct Table {
    fds: HashMap<(u32, i32), ConnId>,
    sks: HashMap<u64, ConnId>,
    next: ConnId,
}

/// What [`Table::bind`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Bound {
    /// The fd is the connection it was.
    Known(ConnId),
    /// A connection new to the table (`replaced`: the one this fd was
    /// before, now ended).
    New {
        /// The new connection.
        id: ConnId,
        /// The fd's previous connection, if it had one.
        replaced: Option<ConnId>,
    },
}

impl Table {
    /// The connection `tgid`'s `fd` is, on socket `sk`.
    pub fn bind(&mut self, tgid: u32, fd: i32, sk: u64) -> Bound {
        if let Some(&id) = self.fds.get(&(tgid, fd))
            && self.sks.get(&sk) == Some(&id)
        {
            return Bound::Known(id);
        }
        // The same socket under another fd (dup, or another process of the
        // same group after fork) is the same connection.
        if let Some(&id) = self.sks.get(&sk) {
            let replaced = self.fds.insert((tgid, fd), id).filter(|&old| old != id);
            return match replaced {
                None => Bound::Known(id),
                Some(old) => {
                    self.unbind_conn(old);
                    Bound::New {
                        id,
                        replaced: Some(old),
                    }
                }
            };
        }
        self.next += 1;
        let id = self.next;
        let replaced = self.fds.insert((tgid, fd), id);
        if let Some(old) = replaced {
            self.unbind_conn(old);
        }
        self.sks.insert(sk, id);
        Bound::New { id, replaced }
    }

    /// The connection `tgid`'s `fd` is from now on, on a socket just
    /// created (connect, accept): whatever the table knew under the same
    /// socket address was another socket, freed since (the kernel reuses
    /// the address at once, possibly before the old fd's close returned).
    pub fn bind_new(&mut self, tgid: u32, fd: i32, sk: u64) -> Bound {
        self.forget_sk(sk);
        self.bind(tgid, fd, sk)
    }

    /// The socket at `sk` was freed: a later socket at the same address is
    /// another one. Its connection stays known by its fd until the close.
    pub fn forget_sk(&mut self, sk: u64) {
        self.sks.remove(&sk);
    }

    /// `tgid` closed `fd`: returns the connection it was.
    pub fn close(&mut self, tgid: u32, fd: i32) -> Option<ConnId> {
        let id = self.fds.remove(&(tgid, fd))?;
        // Another fd may still hold the socket (dup, fork).
        if !self.fds.values().any(|&other| other == id) {
            self.sks.retain(|_, c| *c != id);
        }
        Some(id)
    }

    /// Forgets `tgid`'s `fd` without a close (its connection is gone).
    pub fn unbind_fd(&mut self, tgid: u32, fd: i32) {
        self.fds.remove(&(tgid, fd));
    }

    /// The connection `tgid`'s `fd` is.
    pub fn by_fd(&self, tgid: u32, fd: i32) -> Option<ConnId> {
        self.fds.get(&(tgid, fd)).copied()
    }

    /// The connection on socket `sk`.
    pub fn by_sk(&self, sk: u64) -> Option<ConnId> {
        self.sks.get(&sk).copied()
    }

    /// Forgets every fd of `tgid` (the process exited): returns its
    /// connections.
    pub fn forget_process(&mut self, tgid: u32) -> Vec<ConnId> {
        let mut gone: Vec<ConnId> = self
            .fds
            .iter()
            .filter(|((t, _), _)| *t == tgid)
            .map(|(_, &id)| id)
            .collect();
        gone.sort_unstable();
        gone.dedup();
        for &id in &gone {
            self.unbind_conn(id);
        }
        gone
    }

    fn unbind_conn(&mut self, id: ConnId) {
        self.fds.retain(|_, c| *c != id);
        self.sks.retain(|_, c| *c != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(port: u16) -> Ends {
        Ends {
            local: "192.0.2.1:80".parse().unwrap(),
            remote: SocketAddr::from(([192, 0, 2, 10], port)),
        }
    }

    #[test]
    fn the_role_comes_from_the_state_before_established() {
        let mut t = Tuples::default();
        t.on_state(1, TcpState::SynRecv, TcpState::Established, ends(1), 5);
        t.on_state(2, TcpState::SynSent, TcpState::Established, ends(2), 6);
        t.on_state(3, TcpState::Established, TcpState::CloseWait, ends(3), 7);
        assert_eq!(t.claim(1).unwrap().role, Role::Client);
        assert_eq!(t.claim(2).unwrap().role, Role::Backend);
        assert_eq!(t.claim(3), None);
        assert_eq!(t.claim(1), None, "a tuple is claimed once");
    }

    #[test]
    fn unclaimed_tuples_are_bounded() {
        let mut t = Tuples::default();
        for sk in 0..(UNCLAIMED_TUPLES as u64 + 10) {
            t.on_state(sk, TcpState::SynRecv, TcpState::Established, ends(1), sk);
        }
        assert_eq!(t.evicted(), 10);
        assert!(t.claim(0).is_none());
        assert!(t.claim(UNCLAIMED_TUPLES as u64 + 9).is_some());
    }

    #[test]
    fn a_reused_fd_is_a_new_connection() {
        let mut t = Table::default();
        let Bound::New {
            id: a,
            replaced: None,
        } = t.bind(10, 5, 0xa)
        else {
            panic!()
        };
        assert_eq!(t.bind(10, 5, 0xa), Bound::Known(a));
        // fd 5 now names another socket: closed and reopened unseen.
        let Bound::New { id: b, replaced } = t.bind(10, 5, 0xb) else {
            panic!()
        };
        assert_ne!(a, b);
        assert_eq!(replaced, Some(a));
        assert_eq!(t.by_sk(0xa), None);
        // A reused socket address after a close is new too.
        assert_eq!(t.close(10, 5), Some(b));
        let Bound::New {
            id: c,
            replaced: None,
        } = t.bind(10, 5, 0xb)
        else {
            panic!()
        };
        assert_ne!(c, b);
    }

    #[test]
    fn a_socket_address_reused_by_a_connect_is_a_new_connection() {
        let mut t = Table::default();
        let Bound::New { id: old, .. } = t.bind(10, 5, 0xa) else {
            panic!()
        };
        // Freed and reused by another thread's connect before fd 5's close
        // returned.
        let Bound::New {
            id: new,
            replaced: None,
        } = t.bind_new(10, 6, 0xa)
        else {
            panic!()
        };
        assert_ne!(old, new);
        assert_eq!(t.by_sk(0xa), Some(new));
        assert_eq!(t.close(10, 5), Some(old));
        assert_eq!(
            t.by_sk(0xa),
            Some(new),
            "the old close leaves the new socket"
        );
    }

    #[test]
    fn the_same_fd_number_in_two_processes_is_two_connections() {
        let mut t = Table::default();
        let Bound::New { id: a, .. } = t.bind(10, 5, 0xa) else {
            panic!()
        };
        let Bound::New { id: b, .. } = t.bind(11, 5, 0xb) else {
            panic!()
        };
        assert_ne!(a, b);
        assert_eq!(t.forget_process(10), vec![a]);
        assert_eq!(t.by_sk(0xb), Some(b));
    }
}

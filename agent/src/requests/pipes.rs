//! The pipes of a splicing TCP proxy, and which connection the bytes in
//! each came from. Pure: the tracker feeds it the pipe, splice and close
//! calls in kernel-time order.
//!
//! A proxy that splices (HAProxy with `option splice-*`) moves a stream's
//! bytes `splice(client -> pipe)` then `splice(pipe -> backend)`, with no
//! user buffer, so no payload is ever seen. The pipe is the link: while a
//! pipe holds bytes from one connection only, whatever is spliced out of
//! it came from that connection. A pipe is a FIFO, so this is exact as
//! long as every splice of the pipe is seen, which the level checks: a
//! splice out of more bytes than went in means something was missed, and
//! the pipe links nothing until it is seen empty again.
//!
//! Proxies keep pipes in a pool and reuse them (HAProxy returns a pipe to
//! its pool only when it is empty), so a pipe links different connections
//! over its life; a pipe fed by two connections before it drained links
//! neither.

use std::collections::HashMap;

use super::sockets::ConnId;

/// Where the bytes a splice took out of a pipe came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// All of them from this connection.
    From(ConnId),
    /// Unknown: the pipe was made before the agent saw it, was fed by two
    /// connections at once, or moved bytes the agent did not see.
    Unknown,
}

/// What fed a pipe since it was last empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Empty,
    One(ConnId),
    /// Two connections, or bytes of unknown origin: links nothing until
    /// the pipe is empty again.
    Doubt,
}

#[derive(Debug)]
struct Pipe {
    /// Bytes in the pipe, as far as the splices seen say.
    level: u64,
    source: Source,
    /// Ends still open (2, then 1, then the pipe is forgotten).
    open_ends: u8,
}

/// Every pipe of the traced processes, by (tgid, fd) of either end.
#[derive(Debug, Default)]
pub struct Pipes {
    ends: HashMap<(u32, i32), u64>,
    pipes: HashMap<u64, Pipe>,
    next: u64,
}

impl Pipes {
    /// `tgid` made a pipe with these ends. Whatever those fd numbers were
    /// before was closed (an unseen close included).
    pub fn made(&mut self, tgid: u32, read_fd: i32, write_fd: i32) {
        self.closed(tgid, read_fd);
        self.closed(tgid, write_fd);
        self.next += 1;
        let id = self.next;
        self.pipes.insert(
            id,
            Pipe {
                level: 0,
                source: Source::Empty,
                open_ends: 2,
            },
        );
        self.ends.insert((tgid, read_fd), id);
        self.ends.insert((tgid, write_fd), id);
    }

    /// `tgid` closed `fd`; returns whether it was a pipe's end.
    pub fn closed(&mut self, tgid: u32, fd: i32) -> bool {
        let Some(id) = self.ends.remove(&(tgid, fd)) else {
            return false;
        };
        if let Some(p) = self.pipes.get_mut(&id) {
            p.open_ends = p.open_ends.saturating_sub(1);
            if p.open_ends == 0 {
                self.pipes.remove(&id);
            }
        }
        true
    }

    /// `tgid` exited: its pipes are gone.
    pub fn forget_process(&mut self, tgid: u32) {
        let fds: Vec<i32> = self
            .ends
            .keys()
            .filter(|(t, _)| *t == tgid)
            .map(|&(_, fd)| fd)
            .collect();
        for fd in fds {
            self.closed(tgid, fd);
        }
    }

    /// Whether `tgid`'s `fd` is a pipe end the agent saw made.
    pub fn is_pipe(&self, tgid: u32, fd: i32) -> bool {
        self.ends.contains_key(&(tgid, fd))
    }

    /// `bytes` went into `tgid`'s pipe end `fd` from connection `from`
    /// (`None`: a socket the agent does not know).
    pub fn fed(&mut self, tgid: u32, fd: i32, from: Option<ConnId>, bytes: u64) {
        let Some(p) = self.pipe_mut(tgid, fd) else {
            return;
        };
        p.source = match (p.source, from) {
            (Source::Empty, Some(c)) => Source::One(c),
            (Source::One(a), Some(c)) if a == c => Source::One(c),
            _ => Source::Doubt,
        };
        p.level += bytes;
    }

    /// `bytes` came out of `tgid`'s pipe end `fd`: where they came from.
    pub fn drained(&mut self, tgid: u32, fd: i32, bytes: u64) -> Drained {
        let Some(p) = self.pipe_mut(tgid, fd) else {
            return Drained::Unknown;
        };
        let from = match p.source {
            Source::One(c) if bytes <= p.level => Drained::From(c),
            _ => Drained::Unknown,
        };
        if bytes >= p.level {
            // Empty again (or it held bytes the agent never saw, which
            // are out now too): the next feed starts afresh.
            p.level = 0;
            p.source = Source::Empty;
        } else {
            p.level -= bytes;
        }
        from
    }

    /// Events were lost: no pipe's content is known any more. Each links
    /// nothing until it is seen empty.
    pub fn doubt_all(&mut self) {
        // An empty one too: it may have been fed unseen.
        for p in self.pipes.values_mut() {
            p.source = Source::Doubt;
        }
    }

    /// Pipes known.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pipes.len()
    }

    fn pipe_mut(&mut self, tgid: u32, fd: i32) -> Option<&mut Pipe> {
        let id = self.ends.get(&(tgid, fd))?;
        self.pipes.get_mut(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u32 = 100;

    #[test]
    fn a_pipe_fed_by_one_connection_links_it_to_where_its_bytes_go() {
        let mut pipes = Pipes::default();
        pipes.made(P, 20, 21);
        pipes.fed(P, 21, Some(7), 1000);
        pipes.fed(P, 21, Some(7), 500);
        assert_eq!(pipes.drained(P, 20, 1200), Drained::From(7));
        assert_eq!(pipes.drained(P, 20, 300), Drained::From(7));
        // Empty: reused for another stream.
        pipes.fed(P, 21, Some(9), 10);
        assert_eq!(pipes.drained(P, 20, 10), Drained::From(9));
    }

    #[test]
    fn two_sources_at_once_link_nothing_until_the_pipe_is_empty() {
        let mut pipes = Pipes::default();
        pipes.made(P, 20, 21);
        pipes.fed(P, 21, Some(7), 100);
        pipes.fed(P, 21, Some(8), 100);
        assert_eq!(pipes.drained(P, 20, 150), Drained::Unknown);
        assert_eq!(pipes.drained(P, 20, 50), Drained::Unknown);
        pipes.fed(P, 21, Some(8), 5);
        assert_eq!(pipes.drained(P, 20, 5), Drained::From(8));
    }

    #[test]
    fn an_unknown_source_or_unseen_bytes_link_nothing() {
        let mut pipes = Pipes::default();
        pipes.made(P, 20, 21);
        pipes.fed(P, 21, None, 100);
        assert_eq!(pipes.drained(P, 20, 100), Drained::Unknown);
        // More out than went in: something was missed.
        pipes.fed(P, 21, Some(7), 100);
        assert_eq!(pipes.drained(P, 20, 101), Drained::Unknown);
        pipes.fed(P, 21, Some(7), 1);
        assert_eq!(pipes.drained(P, 20, 1), Drained::From(7));
    }

    #[test]
    fn a_pipe_made_before_the_agent_or_of_another_process_is_unknown() {
        let mut pipes = Pipes::default();
        pipes.fed(P, 20, Some(7), 100);
        assert_eq!(pipes.drained(P, 21, 100), Drained::Unknown);
        pipes.made(P, 20, 21);
        assert_eq!(pipes.drained(P + 1, 20, 1), Drained::Unknown);
        assert!(!pipes.is_pipe(P + 1, 20));
        assert!(pipes.is_pipe(P, 21));
    }

    #[test]
    fn closing_both_ends_forgets_the_pipe_and_a_reused_fd_is_a_new_pipe() {
        let mut pipes = Pipes::default();
        pipes.made(P, 20, 21);
        pipes.fed(P, 21, Some(7), 100);
        assert!(pipes.closed(P, 21));
        assert_eq!(pipes.len(), 1, "the read end is still open");
        assert!(pipes.closed(P, 20));
        assert_eq!(pipes.len(), 0);
        assert!(!pipes.closed(P, 20));
        // The same numbers again, with an unseen close before: fresh.
        pipes.made(P, 20, 21);
        pipes.made(P, 21, 20);
        assert_eq!(pipes.len(), 1);
        pipes.fed(P, 20, Some(3), 4);
        assert_eq!(pipes.drained(P, 21, 4), Drained::From(3));
        pipes.forget_process(P);
        assert_eq!(pipes.len(), 0);
    }

    #[test]
    fn lost_events_put_every_pipe_in_doubt_until_it_is_seen_empty() {
        let mut pipes = Pipes::default();
        pipes.made(P, 20, 21);
        pipes.made(P, 30, 31);
        pipes.fed(P, 21, Some(7), 100);
        pipes.doubt_all();
        assert_eq!(pipes.drained(P, 20, 100), Drained::Unknown);
        pipes.fed(P, 31, Some(8), 10);
        assert_eq!(pipes.drained(P, 30, 10), Drained::Unknown);
        pipes.fed(P, 21, Some(7), 1);
        assert_eq!(pipes.drained(P, 20, 1), Drained::From(7));
    }
}

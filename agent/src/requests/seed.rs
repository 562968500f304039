//! Connections and pipes older than the agent, read from `/proc` when a
//! process is first followed: without them, a keep-alive connection opened
//! before the agent started would never be framed (its ESTABLISHED was
//! never seen), and a pipe from a splicing proxy's pool would link nothing.
//!
//! `/proc/PID/fd` names each fd's socket or pipe inode;
//! `/proc/PID/net/tcp{,6}` (the process's own network namespace) gives
//! each TCP socket's inode, state and ends; `/proc/PID/fdinfo/FD` says which
//! end of a pipe an fd is. A socket is a client connection when its local
//! end is one of the process's listening addresses, else a backend one.
//!
//! The parsers are pure; [`read`] gathers. What is read is a snapshot: the
//! tracker takes it at the time it was read, so an fd closed or reused
//! after is corrected by the events that follow (a close, an accept or a
//! connect on that fd replaces the seeded entry).

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use super::sockets::{Ends, Role};

/// `TCP_LISTEN` as /proc/net/tcp prints it.
const LISTEN: u8 = 0x0a;
/// `TCP_TIME_WAIT` and `TCP_CLOSE`: no process holds such a socket.
const TIME_WAIT: u8 = 0x06;
const CLOSE: u8 = 0x07;
/// `O_WRONLY` in fdinfo's octal `flags`.
const O_WRONLY: u32 = 0o1;

/// One line of `/proc/net/tcp` or `tcp6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetTcp {
    /// Local end.
    pub local: SocketAddr,
    /// Remote end.
    pub remote: SocketAddr,
    /// The kernel's `TCP_*` state.
    pub state: u8,
    /// The socket's inode.
    pub inode: u64,
}

/// A connection of a followed process found in `/proc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeededConn {
    /// Its fd.
    pub fd: i32,
    /// Both ends.
    pub ends: Ends,
    /// Accepted (its local end is a listening address) or opened.
    pub role: Role,
}

/// What `/proc` says of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seed {
    /// Its TCP connections.
    pub conns: Vec<SeededConn>,
    /// Its pipes whose both ends it holds: (read fd, write fd).
    pub pipes: Vec<(i32, i32)>,
}

/// An fd's target, from its `/proc/PID/fd` link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdTarget {
    /// `socket:[inode]`.
    Socket(u64),
    /// `pipe:[inode]`.
    Pipe(u64),
}

/// What an fd link such as `socket:[1234]` names.
pub fn fd_target(link: &str) -> Option<FdTarget> {
    let inode = |prefix: &str| {
        link.strip_prefix(prefix)?
            .strip_suffix(']')?
            .parse::<u64>()
            .ok()
    };
    inode("socket:[")
        .map(FdTarget::Socket)
        .or_else(|| inode("pipe:[").map(FdTarget::Pipe))
}

/// The lines of a `/proc/net/tcp` (`v6`: `tcp6`) file; malformed lines are
/// skipped.
pub fn parse_net_tcp(text: &str, v6: bool) -> Vec<NetTcp> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(NetTcp {
                local: addr(f.get(1)?, v6)?,
                remote: addr(f.get(2)?, v6)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90`: the address as the kernel prints it (each 32-bit word
/// of the network-order address as a native-endian hex number), then the
/// port in hex.
fn addr(field: &str, v6: bool) -> Option<SocketAddr> {
    let (a, p) = field.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = a.get(8 * i..8 * i + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = if v6 {
        if a.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[4 * i..4 * i + 4].copy_from_slice(&word(i)?);
        }
        // A dual-stack socket's IPv4 peer, named as the IPv4 address it is
        // (as the tracepoints' addresses are).
        IpAddr::V6(Ipv6Addr::from(b)).to_canonical()
    } else {
        if a.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(0)?))
    };
    Some(SocketAddr::new(ip, port))
}

/// The process's connections and pipes, from its fds (fd, target), its
/// network namespace's TCP sockets, and which of its pipe fds are write
/// ends.
pub fn decide(fds: &[(i32, FdTarget)], tcp: &[NetTcp], write_ends: &HashSet<i32>) -> Seed {
    let by_inode: HashMap<u64, &NetTcp> = tcp.iter().map(|t| (t.inode, t)).collect();
    let held: Vec<(i32, &NetTcp)> = fds
        .iter()
        .filter_map(|&(fd, t)| match t {
            FdTarget::Socket(inode) => by_inode.get(&inode).map(|s| (fd, *s)),
            FdTarget::Pipe(_) => None,
        })
        .collect();
    let listening: Vec<SocketAddr> = held
        .iter()
        .filter(|(_, s)| s.state == LISTEN)
        .map(|(_, s)| s.local)
        .collect();
    let listens_on = |local: SocketAddr| {
        listening
            .iter()
            .any(|l| l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip()))
    };
    let conns = held
        .iter()
        .filter(|(_, s)| !matches!(s.state, LISTEN | TIME_WAIT | CLOSE))
        .map(|&(fd, s)| SeededConn {
            fd,
            ends: Ends {
                local: s.local,
                remote: s.remote,
            },
            role: if listens_on(s.local) {
                Role::Client
            } else {
                Role::Backend
            },
        })
        .collect();
    let mut ends: HashMap<u64, (Option<i32>, Option<i32>)> = HashMap::new();
    for &(fd, t) in fds {
        if let FdTarget::Pipe(inode) = t {
            let e = ends.entry(inode).or_default();
            let slot = if write_ends.contains(&fd) {
                &mut e.1
            } else {
                &mut e.0
            };
            // A pipe end held twice (dup) is not one pipe's pair of ends.
            *slot = if slot.is_none() { Some(fd) } else { Some(-1) };
        }
    }
    let mut pipes: Vec<(i32, i32)> = ends
        .into_values()
        .filter_map(|e| match e {
            (Some(r), Some(w)) if r >= 0 && w >= 0 => Some((r, w)),
            _ => None,
        })
        .collect();
    pipes.sort_unstable();
    Seed { conns, pipes }
}

/// Reads process `pid`'s connections and pipes from `proc_root`. A process
/// that exited, or a file that cannot be read, gives what could be read.
pub fn read(proc_root: &Path, pid: u32) -> Seed {
    let dir = proc_root.join(pid.to_string());
    let mut fds = Vec::new();
    let mut write_ends = HashSet::new();
    if let Ok(entries) = fs::read_dir(dir.join("fd")) {
        for e in entries.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Some(target) = fs::read_link(e.path())
                .ok()
                .and_then(|l| l.to_str().and_then(fd_target))
            else {
                continue;
            };
            if let FdTarget::Pipe(_) = target
                && fdinfo_flags(&dir, fd).is_some_and(|f| f & O_WRONLY != 0)
            {
                write_ends.insert(fd);
            }
            fds.push((fd, target));
        }
    }
    if fds.is_empty() {
        return Seed::default();
    }
    let mut tcp = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        if let Ok(text) = fs::read_to_string(dir.join("net").join(file)) {
            tcp.extend(parse_net_tcp(&text, v6));
        }
    }
    decide(&fds, &tcp, &write_ends)
}

/// The `flags:` of `/proc/PID/fdinfo/FD` (octal).
fn fdinfo_flags(dir: &Path, fd: i32) -> Option<u32> {
    let text = fs::read_to_string(dir.join("fdinfo").join(fd.to_string())).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("flags:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100000A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1000 1 0000000000000000 100 0 0 10 0
   1: 0100000A:0050 0900A8C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 20 4 30 10 -1
   2: 0500000A:8CA0 0200000A:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1
   3: 0500000A:8CA1 0200000A:1F90 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
   4: garbage
";

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_kernels_ipv4_and_ipv6_lines() {
        let lines = parse_net_tcp(TCP, false);
        assert_eq!(lines.len(), 4, "the malformed line is skipped");
        assert_eq!(lines[1].local, v4("10.0.0.1:80"));
        assert_eq!(lines[1].remote, v4("192.168.0.9:40000"));
        assert_eq!((lines[1].state, lines[1].inode), (1, 1001));
        let six = "header\n   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:A000 01 0:0 0:0 0 0 0 77 1\n";
        let l = parse_net_tcp(six, true);
        assert_eq!(l[0].local, "[::1]:8080".parse().unwrap());
        assert_eq!(
            l[0].remote,
            v4("127.0.0.1:40960"),
            "v4-mapped is named as IPv4"
        );
        assert!(parse_net_tcp("h\n 0: 0100:0050 0:0 01 x x x x x 5\n", false).is_empty());
    }

    #[test]
    fn fd_links_name_sockets_and_pipes() {
        assert_eq!(fd_target("socket:[42]"), Some(FdTarget::Socket(42)));
        assert_eq!(fd_target("pipe:[7]"), Some(FdTarget::Pipe(7)));
        assert_eq!(fd_target("/dev/null"), None);
        assert_eq!(fd_target("socket:[x]"), None);
    }

    #[test]
    fn a_socket_on_a_listening_address_is_a_client_connection() {
        let tcp = parse_net_tcp(TCP, false);
        let fds = [
            (3, FdTarget::Socket(1000)),
            (7, FdTarget::Socket(1001)),
            (8, FdTarget::Socket(1002)),
            (9, FdTarget::Socket(5555)),
            (10, FdTarget::Pipe(1)),
            (11, FdTarget::Pipe(1)),
            (12, FdTarget::Pipe(2)),
        ];
        let seed = decide(&fds, &tcp, &HashSet::from([11, 12]));
        assert_eq!(
            seed.conns,
            vec![
                SeededConn {
                    fd: 7,
                    ends: Ends {
                        local: v4("10.0.0.1:80"),
                        remote: v4("192.168.0.9:40000")
                    },
                    role: Role::Client
                },
                SeededConn {
                    fd: 8,
                    ends: Ends {
                        local: v4("10.0.0.5:36000"),
                        remote: v4("10.0.0.2:8080")
                    },
                    role: Role::Backend
                },
            ]
        );
        assert_eq!(seed.pipes, vec![(10, 11)], "a lone end is no pipe");
    }

    #[test]
    fn this_process_reads_its_own_socket_and_pipe() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut fds = [0i32; 2];
        // SAFETY: pipe(2) writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let seed = read(Path::new("/proc"), std::process::id());
        use std::os::fd::AsRawFd as _;
        let find = |fd| seed.conns.iter().find(|c| c.fd == fd).copied();
        let s = find(server.as_raw_fd()).expect("the accepted socket");
        assert_eq!(
            (s.role, s.ends.local),
            (Role::Client, listener.local_addr().unwrap())
        );
        let c = find(client.as_raw_fd()).expect("the connected socket");
        assert_eq!(
            (c.role, c.ends.remote),
            (Role::Backend, listener.local_addr().unwrap())
        );
        assert!(seed.pipes.contains(&(fds[0], fds[1])), "{:?}", seed.pipes);
        // SAFETY: closing our own pipe.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}

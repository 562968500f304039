//! `connect_from`: a TCP connection from a chosen source address, which
//! std's `TcpStream` cannot make (it cannot bind before it connects), so
//! the load generator can spread its connections over the client
//! namespace's addresses.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// A TCP connection to `target` from `source` (port chosen by the kernel):
/// std's `TcpStream` cannot bind before it connects.
pub fn connect_from(source: IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    let (storage, len) = sockaddr(SocketAddr::new(source, 0));
    let (target_storage, target_len) = sockaddr(target);
    let family = if source.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the addresses are valid sockaddrs of the given lengths.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const target_storage).cast(),
            target_len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

/// `addr` as a `sockaddr_storage` and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_are_laid_out_for_the_kernel() {
        let (storage, len) = sockaddr("192.0.2.10:8080".parse().unwrap());
        assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in>());
        // SAFETY: sockaddr wrote a sockaddr_in at the start.
        let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const storage).cast()) };
        assert_eq!(sin.sin_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(u16::from_be(sin.sin_port), 8080);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [192, 0, 2, 10]);
        let (storage, len) = sockaddr("[2001:db8::1]:443".parse().unwrap());
        assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in6>());
        // SAFETY: as above, a sockaddr_in6.
        let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const storage).cast()) };
        assert_eq!(u16::from_be(sin6.sin6_port), 443);
        assert_eq!(sin6.sin6_addr.s6_addr[..2], [0x20, 0x01]);
    }

    #[test]
    fn connects_from_the_chosen_loopback_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let stream = connect_from("127.0.0.2".parse().unwrap(), target).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.2");
        assert_eq!(stream.local_addr().unwrap(), peer);
        let refused = connect_from("127.0.0.1".parse().unwrap(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(
            refused.unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    }
}

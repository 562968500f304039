//! Sends raw frames out of an interface through an `AF_PACKET` socket, so
//! frames crafted with [`crate::frames`] (VLAN tags, IPv6 extension headers,
//! malformed headers) reach the XDP program on the veth peer exactly as
//! built.
//!
//! The kernel refuses frames shorter than an Ethernet header (14 bytes);
//! test those with `BPF_PROG_TEST_RUN` instead.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, ensure};

use crate::netns::{NetNs, in_netns_opt};

/// An `AF_PACKET` socket bound to one interface for sending.
///
/// The socket lives in the namespace it was opened in, so once opened it can
/// send from any thread (benchmarks reuse one for millions of frames).
#[derive(Debug)]
pub struct RawSender {
    fd: OwnedFd,
    ifindex: i32,
    iface: String,
}

impl RawSender {
    /// Opens a sender on `iface` in `ns` (or the test's namespace for
    /// `None`).
    pub fn open(ns: Option<&NetNs>, iface: &str) -> anyhow::Result<Self> {
        in_netns_opt(ns, || {
            let c_iface = CString::new(iface).context("interface name with a NUL")?;
            // SAFETY: `c_iface` is a valid C string for the call.
            let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
            if ifindex == 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("if_nametoindex({iface})"));
            }
            // Protocol 0: the socket sends but never receives, so it needs no
            // draining however many frames cross the link.
            // SAFETY: plain socket(2) call; the result is checked.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error()).context("socket(AF_PACKET, SOCK_RAW)");
            }
            Ok(Self {
                // SAFETY: `fd` is a fresh descriptor we own.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                ifindex: ifindex as i32,
                iface: iface.to_owned(),
            })
        })
    }

    /// The interface's index in its namespace.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Sends one frame, as is (no padding, no FCS).
    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        ensure!(
            frame.len() >= 14,
            "cannot send a {}-byte frame on {}: AF_PACKET needs a full Ethernet header",
            frame.len(),
            self.iface
        );
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        // The frame's own EtherType (already network order in the bytes);
        // the receiving veth re-derives it anyway.
        addr.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `addr` are valid for the stated lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("sendto on {} ({}-byte frame)", self.iface, frame.len()));
        }
        ensure!(
            sent as usize == frame.len(),
            "short send on {}: {sent} of {} bytes",
            self.iface,
            frame.len()
        );
        Ok(())
    }

    /// Sends every frame in order.
    pub fn send_all<F: AsRef<[u8]>>(&self, frames: &[F]) -> anyhow::Result<()> {
        frames.iter().try_for_each(|f| self.send(f.as_ref()))
    }
}

/// Opens a [`RawSender`] on `iface` in `ns` and sends `frames` in order.
pub fn send_frames<F: AsRef<[u8]>>(
    ns: Option<&NetNs>,
    iface: &str,
    frames: &[F],
) -> anyhow::Result<()> {
    RawSender::open(ns, iface)?.send_all(frames)
}

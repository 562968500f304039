//! Attaching the XDP program to interfaces, with errors a user can act on.
//!
//! Attachments are bpf_links (kernel 5.9+): the kernel detaches them when the
//! last file descriptor closes, so an agent killed with SIGKILL leaves
//! nothing attached, and a restart finds the interface free. A link also
//! cannot replace another program: an interface that already has an XDP
//! program is refused, never taken over.
//!
//! The mode matters to what the counts mean. Native XDP runs in the driver
//! on each received frame. Generic XDP runs on the skb after GRO, so a
//! GRO-merged (or, on veth and loopback, GSO) super-packet of up to 64 KiB
//! is one packet to it: packet counts are of super-packets, not of wire
//! packets. Each attachment therefore keeps its mode, every flow record
//! carries it, and `auto` falling back to generic is a warning.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use aya::programs::{ProgramError, Xdp, XdpMode as AyaMode, xdp::XdpLinkId};

use crate::config::XdpMode;

/// The XDP mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native (driver).
    Native,
    /// Generic (skb).
    Generic,
}

impl AttachedMode {
    /// Name for logs and records.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// What generic mode's counts mean, for the fallback warning.
pub const GENERIC_COUNTS: &str = "generic XDP sees packets after GRO (and GSO super-packets as \
     sent by a veth peer), so a merged super-packet (up to 64 KiB) counts as one packet: \
     network.packets counts super-packets, not wire packets, and network.bytes counts one set of \
     headers per super-packet";

/// One interface the program is attached to.
#[derive(Debug)]
pub struct Attachment {
    /// Interface name.
    pub iface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Mode in use.
    pub mode: AttachedMode,
    /// Why native mode was refused when `auto` fell back to generic.
    pub fallback: Option<String>,
    /// The link, to detach it.
    pub link: XdpLinkId,
}

/// Why attaching failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No such interface.
    #[error("interface `{iface}` does not exist (see `ip link show`)")]
    UnknownInterface {
        /// The name given.
        iface: String,
    },
    /// Another XDP program is on the interface.
    #[error(
        "interface `{iface}` already has an XDP program attached; lbwitness never replaces a \
         program it does not own. Inspect it with `ip link show dev {iface}` or \
         `bpftool net show dev {iface}` and detach it if it is unused"
    )]
    Busy {
        /// The interface.
        iface: String,
    },
    /// The driver has no native XDP and native mode was required.
    #[error("interface `{iface}` does not support native XDP; use --xdp-mode generic or auto")]
    NativeUnsupported {
        /// The interface.
        iface: String,
    },
    /// The driver cannot fit a frame of the interface's MTU into one XDP
    /// buffer (ERANGE; veth checks its peer's MTU, e.g. "Peer MTU is too
    /// large to set XDP"). Programs loaded as multi-buffer (`xdp.frags`,
    /// Linux 5.18+) lift the limit; lbwitness's program is single-buffer so
    /// that it loads on 5.11 and every header it reads is in the linear
    /// part.
    #[error(
        "native XDP on `{iface}` was refused: its MTU{mtu} is more than the driver fits in one \
         XDP buffer for a single-buffer program (veth with 4 KiB pages takes at most 3506, and \
         checks its peer's MTU). Lower the MTU (`ip link set dev {iface} mtu 1500`; on veth, \
         the peer's too) or use --xdp-mode generic, which counts GRO super-packets as one packet"
    )]
    MtuTooLarge {
        /// The interface.
        iface: String,
        /// " (9000)" when the MTU could be read, else empty.
        mtu: String,
    },
    /// The kernel refused for lack of privilege.
    #[error("attaching XDP to `{iface}` was refused: missing capability CAP_NET_ADMIN ({source})")]
    Permission {
        /// The interface.
        iface: String,
        /// The kernel's error.
        source: ProgramError,
    },
    /// Anything else.
    #[error("attaching XDP to `{iface}` in {mode} mode failed: {source}")]
    Other {
        /// The interface.
        iface: String,
        /// The mode tried.
        mode: &'static str,
        /// The kernel's error.
        source: ProgramError,
    },
}

fn errno(err: &ProgramError) -> Option<i32> {
    match err {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    }
}

fn try_mode(prog: &mut Xdp, iface: &str, mode: AttachedMode) -> Result<XdpLinkId, AttachError> {
    let aya_mode = match mode {
        AttachedMode::Native => AyaMode::Driver,
        AttachedMode::Generic => AyaMode::Skb,
    };
    prog.attach(iface, aya_mode)
        .map_err(|source| match (&source, errno(&source)) {
            (ProgramError::UnknownInterface { .. }, _) => AttachError::UnknownInterface {
                iface: iface.to_owned(),
            },
            // EBUSY: a program or link holds this mode; EEXIST: a program holds
            // the other mode (native and generic cannot coexist).
            (_, Some(libc::EBUSY | libc::EEXIST)) => AttachError::Busy {
                iface: iface.to_owned(),
            },
            (_, Some(libc::EOPNOTSUPP)) if mode == AttachedMode::Native => {
                AttachError::NativeUnsupported {
                    iface: iface.to_owned(),
                }
            }
            (_, Some(libc::ERANGE)) if mode == AttachedMode::Native => AttachError::MtuTooLarge {
                iface: iface.to_owned(),
                mtu: mtu(iface).map_or_else(String::new, |m| format!(" ({m})")),
            },
            (_, Some(libc::EPERM | libc::EACCES)) => AttachError::Permission {
                iface: iface.to_owned(),
                source,
            },
            _ => AttachError::Other {
                iface: iface.to_owned(),
                mode: mode.as_str(),
                source,
            },
        })
}

/// The MTU of `iface` in the agent's network namespace (SIOCGIFMTU), for
/// error messages.
fn mtu(iface: &str) -> Option<i32> {
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return None;
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor we own (closed on drop).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU into `req`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &raw mut req) };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the kernel filled the union's MTU member.
    Some(unsafe { req.ifr_ifru.ifru_mtu })
}

/// Attaches `prog` to `iface`. `auto` tries native first and falls back to
/// generic when native is refused for a reason generic does not share (no
/// driver support, the MTU, anything but privilege, a busy interface or a
/// missing one); the attachment says why.
pub fn attach(
    prog: &mut Xdp,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<Attachment, AttachError> {
    let mut fallback = None;
    let (link, mode) = match mode {
        XdpMode::Native => (
            try_mode(prog, iface, AttachedMode::Native)?,
            AttachedMode::Native,
        ),
        XdpMode::Generic => (
            try_mode(prog, iface, AttachedMode::Generic)?,
            AttachedMode::Generic,
        ),
        XdpMode::Auto => match try_mode(prog, iface, AttachedMode::Native) {
            Ok(link) => (link, AttachedMode::Native),
            Err(
                e @ (AttachError::NativeUnsupported { .. }
                | AttachError::MtuTooLarge { .. }
                | AttachError::Other { .. }),
            ) => {
                let link = try_mode(prog, iface, AttachedMode::Generic)?;
                fallback = Some(e.to_string());
                (link, AttachedMode::Generic)
            }
            Err(e) => return Err(e),
        },
    };
    Ok(Attachment {
        iface: iface.to_owned(),
        ifindex,
        mode,
        fallback,
        link,
    })
}

//! Attaching the XDP program to interfaces, with errors a user can act on.
//!
//! Attachments are bpf_links (kernel 5.9+): the kernel detaches them when the
//! last file descriptor closes, so an agent killed with SIGKILL leaves
//! nothing attached, and a restart finds the interface free. A link also
//! cannot replace another program: an interface that already has an XDP
//! program is refused, never taken over.

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

/// One interface the program is attached to.
#[derive(Debug)]
pub struct Attachment {
    /// Interface name.
    pub iface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Mode in use.
    pub mode: AttachedMode,
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

/// Attaches `prog` to `iface`. `auto` tries native first and falls back to
/// generic only when the driver lacks native XDP.
pub fn attach(
    prog: &mut Xdp,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<Attachment, AttachError> {
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
            Err(AttachError::NativeUnsupported { .. } | AttachError::Other { .. }) => (
                try_mode(prog, iface, AttachedMode::Generic)?,
                AttachedMode::Generic,
            ),
            Err(e) => return Err(e),
        },
    };
    Ok(Attachment {
        iface: iface.to_owned(),
        ifindex,
        mode,
        link,
    })
}

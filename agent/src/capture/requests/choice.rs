//! Which program serves each hook of request capture, and why: what
//! `lbwitness doctor` prints.

use std::fmt;

/// One thing request capture needs from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// fd, buffers and return values of the data, accept, connect and close syscalls.
    Syscalls,
    /// Following new workers (fork) and forgetting exited processes.
    ProcessFollow,
    /// The socket (`struct sock *`) behind a send or receive.
    SockOfData,
    /// TCP state changes (the tuple at ESTABLISHED).
    SockState,
    /// The socket of a connect.
    SockOfConnect,
    /// The socket of an accept.
    SockOfAccept,
    /// Resets sent and received.
    TcpResets,
    /// Retransmissions.
    TcpRetransmits,
    /// Socket destruction (its `sk` may be reused after).
    TcpDestroy,
    /// The plaintext of TLS connections (libssl's `SSL_read`/`SSL_write`).
    TlsPlaintext,
    /// Splices between sockets and pipes, and the pipes' ends (a TCP proxy
    /// that splices, such as HAProxy with `option splice-*`).
    Splice,
}

impl Hook {
    /// Every hook, in the order the loader decides them.
    pub const ALL: [Hook; 11] = [
        Self::Syscalls,
        Self::ProcessFollow,
        Self::SockOfData,
        Self::SockState,
        Self::SockOfConnect,
        Self::SockOfAccept,
        Self::TcpResets,
        Self::TcpRetransmits,
        Self::TcpDestroy,
        Self::TlsPlaintext,
        Self::Splice,
    ];

    /// Stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Syscalls => "syscalls",
            Self::ProcessFollow => "process_follow",
            Self::SockOfData => "sock_of_data",
            Self::SockState => "sock_state",
            Self::SockOfConnect => "sock_of_connect",
            Self::SockOfAccept => "sock_of_accept",
            Self::TcpResets => "tcp_resets",
            Self::TcpRetransmits => "tcp_retransmits",
            Self::TcpDestroy => "tcp_destroy",
            Self::TlsPlaintext => "tls_plaintext",
            Self::Splice => "splice",
        }
    }
}

/// How a hook is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Tracepoints: a stable ABI whose record layout the loader checks.
    Tracepoint,
    /// kprobes on kernel functions (IPv6 tuples only when BTF gave the offsets).
    Kprobe,
    /// uprobes on a user-space library.
    Uprobe,
    /// Nothing: the hook's events are not captured.
    Unavailable,
}

impl Via {
    /// Name for logs and `lbwitness doctor`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoint",
            Self::Kprobe => "kprobe",
            Self::Uprobe => "uprobe",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What the loader chose for one hook, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookChoice {
    /// The hook.
    pub hook: Hook,
    /// What serves it.
    pub via: Via,
    /// Why: what was attached, or what failed at each step of the fallback.
    pub why: String,
}

impl fmt::Display for HookChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<16} {:<12} {}",
            self.hook.as_str(),
            self.via.as_str(),
            self.why
        )
    }
}

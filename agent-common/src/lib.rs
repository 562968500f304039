//! Types shared by the lbwitness kernel programs (`agent-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]` with explicit padding fields, so its layout
//! is the same for the BPF target and the host, and a `const` assertion pins
//! its size. Userspace-only impls live behind the `user` feature.
#![no_std]

pub mod counter;
pub mod event;
pub mod flow;
pub mod request;

/// Names of the maps and programs in the eBPF object, shared so the agent
/// never looks one up by a string the kernel side does not define.
pub mod names {
    /// The XDP capture program.
    pub const XDP_PROGRAM: &str = "lbwitness_xdp";
    /// LRU hash map of [`crate::flow::FlowKey`] to [`crate::flow::FlowStats`].
    pub const FLOW_MAP: &str = "FLOWS";
    /// Ring buffer carrying [`crate::flow::FlowEvent`]s.
    pub const EVENTS_MAP: &str = "EVENTS";
    /// Per-CPU array of `u64` indexed by [`crate::counter::Counter`].
    pub const COUNTERS_MAP: &str = "COUNTERS";
    /// Read-only global (`u8`): non-zero when the XDP program sends
    /// lifecycle events. The agent sets it at load time from
    /// `flows.lifecycle_records`.
    pub const LIFECYCLE_EVENTS_GLOBAL: &str = "LIFECYCLE_EVENTS";

    /// Names in the request object (`agent-ebpf-requests`).
    pub mod requests {
        /// Ring buffer carrying the [`crate::request`] events.
        pub const EVENTS_MAP: &str = "REQ_EVENTS";
        /// Per-CPU array of `u64` indexed by [`crate::request::RequestCounter`].
        pub const COUNTERS_MAP: &str = "REQ_COUNTERS";
        /// Hash map of tgid (`u32`) to `u32` (1): the processes followed.
        pub const PROCS_MAP: &str = "PROCS";
        /// The switch the request programs check before every send.
        pub const ON_MAP: &str = "REQ_ON";
        /// Read-only global (`u32`): payload bytes captured per data event
        /// (at most [`crate::request::DATA_MAX`]).
        pub const CAPTURE_GLOBAL: &str = "CAPTURE";
        /// Read-only global (`u32`): bytes waiting in the ring at which a
        /// send wakes the reader. Below, sends do not wake it (a wakeup per
        /// event cost the load balancer an interrupt and the agent a
        /// context switch each) and the reader polls on a timer; 0 wakes
        /// it on every send.
        pub const WAKE_GLOBAL: &str = "WAKE_BYTES";
        /// Read-only global (`u32`): offset of `skc_v6_daddr` in `struct
        /// sock_common`, from the kernel's BTF; 0 when unknown, and the
        /// kprobe on tcp_set_state then skips IPv6 sockets (counted).
        pub const KP_V6_DADDR_GLOBAL: &str = "KP_V6_DADDR";
        /// Read-only global (`u32`): offset of `skc_v6_rcv_saddr`; 0 when unknown.
        pub const KP_V6_SADDR_GLOBAL: &str = "KP_V6_SADDR";

        /// A tracepoint program: its name in the object and where it attaches.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Tracepoint {
            /// Program name.
            pub program: &'static str,
            /// tracefs category.
            pub category: &'static str,
            /// tracefs event name.
            pub name: &'static str,
        }

        const fn tp(
            program: &'static str,
            category: &'static str,
            name: &'static str,
        ) -> Tracepoint {
            Tracepoint {
                program,
                category,
                name,
            }
        }

        /// The syscall tracepoints: entry and exit of every data, accept,
        /// connect and close syscall.
        pub const SYSCALLS: &[Tracepoint] = &[
            tp("lbw_enter_read", "syscalls", "sys_enter_read"),
            tp("lbw_enter_readv", "syscalls", "sys_enter_readv"),
            tp("lbw_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
            tp("lbw_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
            tp("lbw_enter_write", "syscalls", "sys_enter_write"),
            tp("lbw_enter_writev", "syscalls", "sys_enter_writev"),
            tp("lbw_enter_sendto", "syscalls", "sys_enter_sendto"),
            tp("lbw_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
            tp("lbw_enter_accept", "syscalls", "sys_enter_accept"),
            tp("lbw_enter_accept4", "syscalls", "sys_enter_accept4"),
            tp("lbw_enter_connect", "syscalls", "sys_enter_connect"),
            tp("lbw_enter_close", "syscalls", "sys_enter_close"),
            tp("lbw_exit_read", "syscalls", "sys_exit_read"),
            tp("lbw_exit_readv", "syscalls", "sys_exit_readv"),
            tp("lbw_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
            tp("lbw_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
            tp("lbw_exit_write", "syscalls", "sys_exit_write"),
            tp("lbw_exit_writev", "syscalls", "sys_exit_writev"),
            tp("lbw_exit_sendto", "syscalls", "sys_exit_sendto"),
            tp("lbw_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
            tp("lbw_exit_accept", "syscalls", "sys_exit_accept"),
            tp("lbw_exit_accept4", "syscalls", "sys_exit_accept4"),
            tp("lbw_exit_connect", "syscalls", "sys_exit_connect"),
            tp("lbw_exit_close", "syscalls", "sys_exit_close"),
        ];
        /// splice(2) and pipe(2)/pipe2(2): how a splicing TCP proxy moves
        /// data, and the pipes that link its two sockets.
        pub const SPLICE: &[Tracepoint] = &[
            tp("lbw_enter_splice", "syscalls", "sys_enter_splice"),
            tp("lbw_exit_splice", "syscalls", "sys_exit_splice"),
            tp("lbw_enter_pipe2", "syscalls", "sys_enter_pipe2"),
            tp("lbw_exit_pipe2", "syscalls", "sys_exit_pipe2"),
        ];
        /// pipe(2), which some architectures (arm64) do not have: glibc
        /// makes its pipes with pipe2 there.
        pub const PIPE: &[Tracepoint] = &[
            tp("lbw_enter_pipe", "syscalls", "sys_enter_pipe"),
            tp("lbw_exit_pipe", "syscalls", "sys_exit_pipe"),
        ];
        /// sock:sock_send_length (the socket of a send).
        pub const SOCK_SEND_LENGTH: Tracepoint =
            tp("lbw_sock_send_length", "sock", "sock_send_length");
        /// sock:sock_recv_length (the socket of a receive).
        pub const SOCK_RECV_LENGTH: Tracepoint =
            tp("lbw_sock_recv_length", "sock", "sock_recv_length");
        /// sock:inet_sock_set_state.
        pub const INET_SOCK_SET_STATE: Tracepoint =
            tp("lbw_inet_sock_set_state", "sock", "inet_sock_set_state");
        /// tcp:tcp_send_reset.
        pub const TCP_SEND_RESET: Tracepoint = tp("lbw_tcp_send_reset", "tcp", "tcp_send_reset");
        /// tcp:tcp_receive_reset.
        pub const TCP_RECEIVE_RESET: Tracepoint =
            tp("lbw_tcp_receive_reset", "tcp", "tcp_receive_reset");
        /// tcp:tcp_retransmit_skb.
        pub const TCP_RETRANSMIT_SKB: Tracepoint =
            tp("lbw_tcp_retransmit_skb", "tcp", "tcp_retransmit_skb");
        /// tcp:tcp_destroy_sock.
        pub const TCP_DESTROY_SOCK: Tracepoint =
            tp("lbw_tcp_destroy_sock", "tcp", "tcp_destroy_sock");
        /// sched:sched_process_fork (follow new workers).
        pub const SCHED_PROCESS_FORK: Tracepoint =
            tp("lbw_sched_process_fork", "sched", "sched_process_fork");
        /// sched:sched_process_exit (forget exited processes).
        pub const SCHED_PROCESS_EXIT: Tracepoint =
            tp("lbw_sched_process_exit", "sched", "sched_process_exit");

        /// A kprobe program: its name in the object and the kernel function.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Kprobe {
            /// Program name.
            pub program: &'static str,
            /// Kernel function.
            pub function: &'static str,
            /// A return probe.
            pub ret: bool,
        }

        const fn kp(program: &'static str, function: &'static str, ret: bool) -> Kprobe {
            Kprobe {
                program,
                function,
                ret,
            }
        }

        /// kprobe tcp_v4_connect: the socket of the thread's connect.
        pub const KP_TCP_V4_CONNECT: Kprobe = kp("lbw_kp_tcp_v4_connect", "tcp_v4_connect", false);
        /// kprobe tcp_v6_connect.
        pub const KP_TCP_V6_CONNECT: Kprobe = kp("lbw_kp_tcp_v6_connect", "tcp_v6_connect", false);
        /// kretprobe inet_csk_accept: the accepted socket.
        pub const KP_INET_CSK_ACCEPT: Kprobe =
            kp("lbw_kp_inet_csk_accept", "inet_csk_accept", true);
        /// kprobe tcp_set_state: state changes (IPv6 tuples only when the
        /// kernel's BTF gave the address offsets).
        pub const KP_TCP_SET_STATE: Kprobe = kp("lbw_kp_tcp_set_state", "tcp_set_state", false);
        /// kprobe tcp_sendmsg: the socket of a send.
        pub const KP_TCP_SENDMSG: Kprobe = kp("lbw_kp_tcp_sendmsg", "tcp_sendmsg", false);
        /// kprobe tcp_recvmsg: the socket of a receive.
        pub const KP_TCP_RECVMSG: Kprobe = kp("lbw_kp_tcp_recvmsg", "tcp_recvmsg", false);
        /// Every kprobe program.
        pub const KPROBES: &[Kprobe] = &[
            KP_TCP_V4_CONNECT,
            KP_TCP_V6_CONNECT,
            KP_INET_CSK_ACCEPT,
            KP_TCP_SET_STATE,
            KP_TCP_SENDMSG,
            KP_TCP_RECVMSG,
        ];

        /// The library the TLS uprobes attach to (found through the
        /// dynamic loader's cache).
        pub const LIBSSL: &str = "libssl.so.3";
        /// The uprobe programs on libssl, with the function each enters.
        pub const SSL_ENTRIES: &[(&str, &str)] = &[
            ("lbw_ssl_read", "SSL_read"),
            ("lbw_ssl_read_ex", "SSL_read_ex"),
            ("lbw_ssl_write", "SSL_write"),
            ("lbw_ssl_write_ex", "SSL_write_ex"),
        ];
        /// The return probe on all four: the plaintext event.
        pub const SSL_RETURN: &str = "lbw_ssl_return";
    }
}

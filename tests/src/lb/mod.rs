//! The load-balancer lab for request capture (#12), and its oracle.
//!
//! * [`topology`]: namespaces and links: a client namespace with several
//!   addresses, the LB's namespace, one namespace per backend.
//! * [`lab`]: [`lab::LbLab`], the topology with nginx backends (a copy of
//!   the binary named [`backend::BACKEND_PROGRAM`], answering the status
//!   the path asks for, see [`backend::expected_status`]) and optionally
//!   failure servers ([`failure`]: refused, reset mid-response, slow).
//! * [`haproxy`]: HAProxy (HTTP with nbthread, server-close or
//!   `http-reuse`, TLS termination; TCP with or without splice), its log
//!   through UDP syslog ([`syslog`]) to the test.
//! * [`nginx_lb`]: nginx as the other load balancer, with its access log.
//! * [`log_entry`]: both logs parsed into [`log_entry::LbLogEntry`].
//! * [`client`]: the load generator ([`http1`] is its codec, [`tls`] the
//!   frontend's certificate).
//! * [`compare`]: the agent's request records against the log.
//! * [`cgroup`]: a cgroup of the test's own, for the cgroup filter.
//!
//! An agent under test runs in the LB's namespace, `lab.net.lb`, e.g.
//! [`crate::agent::Agent::start`] on `lab.net.frontend_iface()`; the LB's
//! processes are [`haproxy::Haproxy::pid`] or [`nginx_lb::NginxLb::pids`],
//! the backends' (which it must not trace) [`lab::LbLab::backend_pids`].
//! Its `lbwitness.request` records go to [`compare::compare`] with the
//! LB's log ([`haproxy::Haproxy::log_entries`],
//! [`nginx_lb::NginxLb::log_entries`]).
//!
//! Everything is an RAII guard with unique names: tests run in parallel
//! and leave no namespace, process or file behind, also on panic.
//!
//! ```no_run
//! use integration_tests::lb::{client::Load, haproxy::{Haproxy, HaproxyConfig}, lab::LbLab};
//!
//! let lab = LbLab::new("doc").unwrap();
//! let lb = Haproxy::start(&lab, HaproxyConfig::http()).unwrap();
//! let report = Load::new(lb.config.frontends()[0], lab.client_ips()).run(&lab.net.client);
//! let log = lb.log_entries(report.exchanges.len(), std::time::Duration::from_secs(5)).unwrap();
//! # drop((log, lb, lab));
//! ```

pub mod backend;
pub mod cgroup;
pub mod client;
pub mod compare;
pub mod connect;
pub mod daemon;
pub mod failure;
pub mod haproxy;
pub mod http1;
pub mod lab;
pub mod log_entry;
pub mod nginx_lb;
pub mod syslog;
pub mod tls;
pub mod topology;

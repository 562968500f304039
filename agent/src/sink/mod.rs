//! Where records go. One trait ([`endpoint::Connector`]) and one file per
//! collector kind.

pub mod endpoint;
pub mod file;
pub mod net;
pub mod nats;
pub mod syslog;
pub mod tls;

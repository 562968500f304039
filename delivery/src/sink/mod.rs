//! Where records go. One trait ([`endpoint::Connector`]) and one file per
//! collector kind.

pub mod endpoint;
pub mod file;
pub mod nats;
pub mod net;
pub mod syslog;
pub mod tls;

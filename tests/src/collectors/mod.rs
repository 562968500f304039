//! Real collectors (syslog servers, NATS JetStream) run as child processes
//! for the sink tests, with ways to read back what they stored.

pub mod nats;

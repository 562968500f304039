//! Requests through the load balancer: the kernel's socket events of the
//! load-balancer processes, turned into one record per HTTP request (which
//! client asked what, which backend served it, with what result) and one per
//! TCP connection.
//!
//! - `event`: decoding the request programs' ring-buffer events;
//! - `http`: the HTTP/1.x framer, a pure parser per connection;
//! - `correlate`: which backend request served which client request, from
//!   content, thread and order, keeping only pairings forced in every
//!   maximum matching;
//! - `pipes`: which connection the bytes in each pipe of a splicing proxy
//!   came from, linking a TCP-mode client connection to its backend;
//! - `relay`: telling a TCP-mode relay from an HTTP proxy by its first bytes;
//! - `seed`: connections and pipes older than the agent, from `/proc`.

pub mod correlate;
pub mod event;
pub mod http;
pub mod input;
pub mod pipes;
pub mod procs;
pub mod records;
pub mod relay;
pub mod reorder;
pub mod seed;
pub mod sockets;
pub mod task;
pub mod tracker;
#[cfg(test)]
mod tracker_tests;

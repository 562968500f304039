//! The two sides of one request as the load balancer saw them: the client
//! side (read from a client socket, answered on it) and the backend side
//! (written to a backend socket, answered on it).
//!
//! Times are kernel nanoseconds (`bpf_ktime_get_ns`), so they compare across
//! CPUs once the lead has sorted events by them.

/// One client request with its response, as the load balancer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSide {
    /// The lead's id for this client request; echoed in the results.
    pub id: u64,
    /// Process (thread group) that read the request.
    pub tgid: u32,
    /// Thread that read the request.
    pub tid: u32,
    /// Hash of the normalized request (request line, then the headers that
    /// survive the proxy's rewriting).
    pub fingerprint: [u8; 32],
    /// A prefix of the request body; may be short or empty.
    pub req_body: Vec<u8>,
    /// Kernel ns: the LB read the request's first byte from the client.
    pub t_read: u64,
    /// Kernel ns: the LB wrote the response's first byte to the client.
    pub t_resp_write: u64,
    /// HTTP status the client received.
    pub status: u16,
    /// A prefix of the response body the client received.
    pub resp_body: Vec<u8>,
    /// Exact-mode tag expected on the backend side (the `X-LBW` value the
    /// load balancer adds for this request), if exact mode is on for its
    /// frontend; then only backend requests carrying it are candidates.
    pub tag: Option<String>,
}

/// One backend request with its response, as the load balancer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSide {
    /// The lead's id for this backend request; the value mappings name.
    pub id: u64,
    /// Process (thread group) that wrote the request.
    pub tgid: u32,
    /// Thread that wrote the request.
    pub tid: u32,
    /// Hash of the normalized request, computed as for [`ClientSide`].
    pub fingerprint: [u8; 32],
    /// A prefix of the request body; may be short or empty.
    pub req_body: Vec<u8>,
    /// Kernel ns: the LB wrote the request's first byte to the backend.
    pub t_write: u64,
    /// Kernel ns: the LB read the response's first byte from the backend.
    pub t_resp_read: u64,
    /// HTTP status the backend answered.
    pub status: u16,
    /// A prefix of the backend's response body.
    pub resp_body: Vec<u8>,
    /// The exact-mode header's value (`X-LBW`) seen in the backend write.
    pub tag: Option<String>,
}

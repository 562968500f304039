//! What the correlator says about one client request.

/// Which backend request served a client request, or why that can't be said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// The pairing is in every maximum matching of the window's graph.
    Mapped {
        /// The backend request's id.
        backend: u64,
    },
    /// As [`Mapping::Mapped`], and both sides carry the same exact-mode tag.
    Exact {
        /// The backend request's id.
        backend: u64,
    },
    /// No pairing can be asserted.
    Ambiguous {
        /// Every backend request that satisfies the edge conditions, in the
        /// order the load balancer wrote them; empty for
        /// [`Reason::NoCandidate`] and [`Reason::TooManyCandidates`].
        candidates: Vec<u64>,
        /// Why.
        reason: Reason,
    },
}

impl Mapping {
    /// The kebab-case name of the mapping kind, as records carry it.
    pub fn kind(&self) -> &'static str {
        match self {
            Mapping::Mapped { .. } => "mapped",
            Mapping::Exact { .. } => "exact",
            Mapping::Ambiguous { .. } => "ambiguous",
        }
    }

    /// The backend, for a mapping that names one.
    pub fn backend(&self) -> Option<u64> {
        match self {
            Mapping::Mapped { backend } | Mapping::Exact { backend } => Some(*backend),
            Mapping::Ambiguous { .. } => None,
        }
    }
}

/// Why a client request is [`Mapping::Ambiguous`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Several candidates, none forced in every maximum matching.
    Tie,
    /// No backend request satisfies the edge conditions (e.g. a response the
    /// load balancer generated itself, such as HAProxy's 503).
    NoCandidate,
    /// The window lost kernel events.
    EventsLost,
    /// A connection in the window pipelined requests.
    Pipelined,
    /// The HTTP framing of a connection in the window was lost.
    FramingLost,
    /// Request and response counts don't balance: retries, redispatch,
    /// responses the load balancer generated.
    Unbalanced,
    /// A client connection in the window spoke HTTP/2.
    Http2,
    /// The window grew past its bound and was closed early.
    WindowTooLarge,
    /// A request stayed in flight longer than the bound.
    Timeout,
    /// The window was closed with requests still in flight (agent stopping).
    Unfinished,
    /// The request's start was never seen, so its window is unknown.
    StartUnseen,
    /// So many candidate pairs that the graph was not built (bounded memory).
    TooManyCandidates,
    /// An event arrived after later ones had been used: the window's order
    /// is in doubt (nothing was lost).
    OutOfOrder,
}

impl Reason {
    /// The stable kebab-case name records carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Tie => "tie",
            Reason::NoCandidate => "no-candidate",
            Reason::EventsLost => "events-lost",
            Reason::Pipelined => "pipelined",
            Reason::FramingLost => "framing-lost",
            Reason::Unbalanced => "unbalanced",
            Reason::Http2 => "http2",
            Reason::WindowTooLarge => "window-too-large",
            Reason::Timeout => "timeout",
            Reason::Unfinished => "unfinished",
            Reason::StartUnseen => "start-unseen",
            Reason::TooManyCandidates => "too-many-candidates",
            Reason::OutOfOrder => "events-out-of-order",
        }
    }

    /// Every reason, for exhaustive tests and documentation.
    pub const ALL: [Reason; 13] = [
        Reason::Tie,
        Reason::NoCandidate,
        Reason::EventsLost,
        Reason::Pipelined,
        Reason::FramingLost,
        Reason::Unbalanced,
        Reason::Http2,
        Reason::WindowTooLarge,
        Reason::Timeout,
        Reason::Unfinished,
        Reason::StartUnseen,
        Reason::TooManyCandidates,
        Reason::OutOfOrder,
    ];
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

//! RFC 8785 JSON canonicalization.

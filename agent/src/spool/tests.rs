//! Writer behaviour on a real directory: size bounds, full policies.

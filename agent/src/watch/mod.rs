//! Watched files.

//! Placeholder: filled by the http work.

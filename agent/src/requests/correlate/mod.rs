//! Placeholder: filled by the correlate work.

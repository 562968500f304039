//! Placeholder: decoding of the request programs' events.

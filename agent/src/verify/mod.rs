//! `lbwitness verify`.

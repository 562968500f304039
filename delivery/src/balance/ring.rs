//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
//! "Consistent Hashing with Bounded Loads", SODA 2018 / arXiv:1608.01350).
//!
//! Each endpoint owns [`VNODES`] points on a 64-bit ring, placed by hashing
//! its name, so the ring is the same on every host and run, and does not
//! change when endpoints are reordered in the config. A key goes to the
//! first endpoint clockwise from its hash that is healthy and whose load is
//! below `ceil(c · (load + 1) / healthy)`: the bound counts the new item,
//! so some healthy endpoint is always below it.

use super::key::{hash_key, mix};

/// Points per endpoint. With 160 the heaviest of 3 endpoints owns about
/// 1.1× its fair share of the ring (the spread shrinks as 1/√VNODES).
pub const VNODES: u32 = 160;

/// The ring: points sorted clockwise, each with its endpoint's index.
#[derive(Clone, Debug)]
pub(super) struct Ring {
    points: Box<[(u64, u32)]>,
}

impl Ring {
    /// The ring of `names` (endpoint `i` is `names[i]`).
    pub(super) fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut points: Vec<(u64, u32)> = names
            .iter()
            .zip(0u32..)
            .flat_map(|(name, i)| {
                let name = name.as_ref();
                (0..VNODES).map(move |v| (hash_key(format!("{name}#{v}").as_bytes()), i))
            })
            .collect();
        // The index breaks ties between equal points, so the order is total.
        points.sort_unstable();
        Self {
            points: points.into(),
        }
    }

    /// The endpoint for `key`: the first healthy one clockwise whose load
    /// is below the bound for load factor `c`. `None` when none is healthy.
    pub(super) fn pick(&self, key: u64, c: f64, healthy: &[bool], load: &[u64]) -> Option<usize> {
        let (up, total) = healthy
            .iter()
            .zip(load)
            .filter(|(h, _)| **h)
            .fold((0u64, 0u64), |(n, t), (_, l)| (n + 1, t.saturating_add(*l)));
        if up == 0 {
            return None;
        }
        let bound = bound(c, total, up);
        // Keys are mixed again so that callers may pass raw numbers (a
        // sequence, a port) and still spread over the ring.
        let h = mix(key);
        let start = self.points.partition_point(|p| p.0 < h);
        let (before, after) = self.points.split_at(start);
        after.iter().chain(before).find_map(|&(_, e)| {
            let e = e as usize;
            (healthy.get(e) == Some(&true) && load.get(e).is_some_and(|l| *l < bound)).then_some(e)
        })
    }
}

/// `ceil(c · (total + 1) / up)`: the most items an endpoint may hold once
/// the new one is placed. At least 1, since `c ≥ 1`.
pub(super) fn bound(c: f64, total: u64, up: u64) -> u64 {
    // f64 is exact for loads below 2^53 items, far beyond any spool.
    (c * (total as f64 + 1.0) / up as f64).ceil() as u64
}

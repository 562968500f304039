//! Balancer and health tests: each strategy's promise as a property, a
//! load simulation for bounded consistent hashing, and the backoff schedule.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use proptest::prelude::*;

use super::{Strategy, ring::bound, *};

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("syslog+relp://10.0.0.{i}:2514"))
        .collect()
}

fn balancer(strategy: Strategy, n: usize) -> Balancer {
    Balancer::try_new(strategy, &names(n), 1.25).unwrap()
}

/// A deterministic stream of keys and random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        key::mix(self.0)
    }
}

#[test]
fn settings_are_validated() {
    let err = |r: Result<Balancer, BalanceError>| r.unwrap_err().to_string();
    assert!(
        err(Balancer::try_new(Strategy::Failover, &[] as &[&str], 1.25)).contains("no endpoints")
    );
    assert!(
        err(Balancer::try_new(
            Strategy::Failover,
            &["a", "b", "a"],
            1.25
        ))
        .contains("`a` is listed twice")
    );
    for bad in [0.99, f64::NAN, f64::INFINITY, -1.0] {
        assert!(
            err(Balancer::try_new(Strategy::ConsistentHash, &["a"], bad)).contains("≥ 1.0"),
            "{bad}"
        );
    }
    assert!(Balancer::try_new(Strategy::ConsistentHash, &["a"], 1.0).is_ok());
    let ms = Duration::from_millis;
    assert!(matches!(
        HealthPolicy::try_new(0, ms(1), ms(1)),
        Err(BalanceError::Threshold)
    ));
    assert!(matches!(
        HealthPolicy::try_new(1, ms(0), ms(1)),
        Err(BalanceError::Backoff { .. })
    ));
    assert!(matches!(
        HealthPolicy::try_new(1, ms(2), ms(1)),
        Err(BalanceError::Backoff { .. })
    ));
    let s: Strategy = serde_json::from_str("\"least_outstanding\"").unwrap();
    assert_eq!(s, Strategy::LeastOutstanding);
    assert!(serde_json::from_str::<Strategy>("\"random\"").is_err());
}

#[test]
fn nothing_healthy_picks_nothing() {
    for s in [
        Strategy::RoundRobin,
        Strategy::LeastOutstanding,
        Strategy::ConsistentHash,
        Strategy::Failover,
    ] {
        let mut b = balancer(s, 3);
        assert_eq!(b.pick(7, &[false; 3], &[0; 3]), None, "{s:?}");
        assert_eq!(
            b.pick(7, &[], &[]),
            None,
            "{s:?}: missing entries are unhealthy"
        );
    }
}

#[test]
fn failover_prefers_config_order_and_returns_to_the_primary() {
    let mut b = balancer(Strategy::Failover, 3);
    let mut pick = |h: [bool; 3]| b.pick(0, &h, &[5, 0, 0]);
    assert_eq!(pick([true, true, true]), Some(0));
    assert_eq!(pick([false, true, true]), Some(1));
    assert_eq!(pick([false, false, true]), Some(2));
    assert_eq!(pick([false, true, true]), Some(1));
    assert_eq!(pick([true, true, true]), Some(0), "back to the primary");
}

proptest! {
    #[test]
    fn round_robin_is_even_over_the_healthy(healthy in proptest::collection::vec(any::<bool>(), 1..9), picks in 0usize..100, start in 0usize..20) {
        let mut b = balancer(Strategy::RoundRobin, healthy.len());
        // Start anywhere in the rotation.
        for _ in 0..start {
            b.pick(0, &[true; 9][..healthy.len()], &[]);
        }
        let mut counts = vec![0usize; healthy.len()];
        for _ in 0..picks {
            match b.pick(0, &healthy, &[]) {
                Some(i) => counts[i] += 1,
                None => prop_assert!(!healthy.contains(&true)),
            }
        }
        let up: Vec<usize> = (0..healthy.len()).filter(|&i| healthy[i]).map(|i| counts[i]).collect();
        let down: usize = (0..healthy.len()).filter(|&i| !healthy[i]).map(|i| counts[i]).sum();
        prop_assert_eq!(down, 0);
        if let (Some(max), Some(min)) = (up.iter().max(), up.iter().min()) {
            prop_assert!(max - min <= 1, "{:?}", counts);
        }
    }

    #[test]
    fn least_outstanding_picks_a_minimum(healthy in proptest::collection::vec(any::<bool>(), 1..9), load in proptest::collection::vec(0u64..4, 9)) {
        let mut b = balancer(Strategy::LeastOutstanding, healthy.len());
        let load = &load[..healthy.len()];
        let min = (0..healthy.len()).filter(|&i| healthy[i]).map(|i| load[i]).min();
        let got = b.pick(0, &healthy, load);
        prop_assert_eq!(got.map(|i| load[i]), min);
        prop_assert!(got.is_none_or(|i| healthy[i]));
    }

    /// Equal loads take turns: with acks keeping up (loads stay equal), the
    /// picks rotate like round robin.
    #[test]
    fn least_outstanding_spreads_ties(n in 1usize..9, picks in 0usize..60) {
        let mut b = balancer(Strategy::LeastOutstanding, n);
        let mut counts = vec![0usize; n];
        for _ in 0..picks {
            counts[b.pick(0, &vec![true; n], &vec![3; n]).unwrap()] += 1;
        }
        prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    }

    /// Under the bound the ring decides alone: the key's home endpoint.
    #[test]
    fn consistent_hash_is_sticky_under_the_bound(key: u64, load in proptest::collection::vec(0u64..50, 3)) {
        let mut b = balancer(Strategy::ConsistentHash, 3);
        let home = b.pick(key, &[true; 3], &[0; 3]).unwrap();
        let limit = bound(1.25, load.iter().sum(), 3);
        let got = b.pick(key, &[true; 3], &load).unwrap();
        if load[home] < limit {
            prop_assert_eq!(got, home);
        } else {
            prop_assert!(load[got] < limit);
        }
    }
}

/// Where each of `keys` lands with no load, under `healthy`.
fn homes(b: &mut Balancer, keys: &[u64], healthy: &[bool]) -> Vec<usize> {
    keys.iter()
        .map(|k| b.pick(*k, healthy, &[0; 5]).unwrap())
        .collect()
}

#[test]
fn consistent_hash_moves_only_the_keys_of_a_leaving_endpoint() {
    let mut rng = Rng(1);
    let keys: Vec<u64> = (0..10_000).map(|_| rng.next()).collect();
    let mut b = balancer(Strategy::ConsistentHash, 5);
    let all = homes(&mut b, &keys, &[true; 5]);
    // Each endpoint owns a fair share of the ring, within 25 %.
    for e in 0..5 {
        let share = all.iter().filter(|h| **h == e).count();
        assert!(
            (1_500..2_500).contains(&share),
            "endpoint {e} owns {share} of 10000 keys"
        );
    }
    let without_2 = homes(&mut b, &keys, &[true, true, false, true, true]);
    for (before, after) in all.iter().zip(&without_2) {
        if *before == 2 {
            assert_ne!(*after, 2);
        } else {
            assert_eq!(before, after, "a key of a healthy endpoint moved");
        }
    }
    assert_eq!(
        homes(&mut b, &keys, &[true; 5]),
        all,
        "keys return when it does"
    );
    // The ring depends on names, not order: reversing the config keeps keys.
    let reversed: Vec<String> = names(5).into_iter().rev().collect();
    let mut r = Balancer::try_new(Strategy::ConsistentHash, &reversed, 1.25).unwrap();
    let again: Vec<usize> = homes(&mut r, &keys, &[true; 5])
        .into_iter()
        .map(|i| 4 - i)
        .collect();
    assert_eq!(again, all);
}

/// 3 endpoints, 10 000 keys with a skew (a tenth of the records carry one
/// hot key), records arriving and acks leaving at random: every pick keeps
/// the chosen endpoint within the bound, and most records stay home.
#[test]
fn consistent_hash_bounds_load_in_a_simulation() {
    let c = 1.25;
    let mut b = Balancer::try_new(Strategy::ConsistentHash, &names(3), c).unwrap();
    let mut rng = Rng(7);
    let keys: Vec<u64> = (0..10_000).map(|_| rng.next()).collect();
    let mut load = [0u64; 3];
    let mut in_flight: VecDeque<usize> = VecDeque::new();
    let (mut at_home, mut records) = (0u32, 0u32);
    let mut peak = 0u64;
    for step in 0..200_000u32 {
        // Arrivals slightly outpace acks until 300 are in flight.
        if rng.next() % 100 < 55 || in_flight.is_empty() {
            let key = if rng.next().is_multiple_of(10) {
                keys[0]
            } else {
                keys[(rng.next() % 10_000) as usize]
            };
            let healthy = [true, step % 50_000 < 40_000, true];
            let home = b.pick(key, &[true; 3], &[0; 3]).unwrap();
            let e = b.pick(key, &healthy, &load).unwrap();
            let total: u64 = (0..3).filter(|&i| healthy[i]).map(|i| load[i]).sum();
            let up = healthy.iter().filter(|h| **h).count() as u64;
            load[e] += 1;
            assert!(
                load[e] <= (c * (total + 1) as f64 / up as f64).ceil() as u64,
                "step {step}: {load:?}"
            );
            peak = peak.max(load[e]);
            at_home += u32::from(e == home);
            records += 1;
            in_flight.push_back(e);
            if in_flight.len() > 300 {
                let done = in_flight.pop_front().unwrap();
                load[done] -= 1;
            }
        } else {
            // Acks come back in any order.
            let i = (rng.next() % in_flight.len() as u64) as usize;
            let done = in_flight.swap_remove_back(i).unwrap();
            load[done] -= 1;
        }
    }
    let home_share = f64::from(at_home) / f64::from(records);
    println!(
        "consistent_hash simulation: {records} records, {home_share:.3} at home, peak load {peak}"
    );
    assert!(home_share > 0.6, "{home_share}");
}

#[test]
fn backoff_grows_doubles_and_caps() {
    let p = HealthPolicy::default();
    // The top of the random range gives the ceiling itself.
    let ceilings: Vec<u128> = (0..10)
        .map(|a| p.backoff(a, u64::MAX).as_millis())
        .collect();
    assert_eq!(
        ceilings,
        [
            250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
        ]
    );
    assert_eq!(p.backoff(u32::MAX, u64::MAX), Duration::from_secs(30));
    assert_eq!(p.backoff(3, 0), Duration::ZERO);
    assert_eq!(p.backoff(3, 1 << 63), Duration::from_millis(1_000));
}

proptest! {
    /// Full jitter: anywhere from 0 to the ceiling, uniformly enough.
    #[test]
    fn backoff_stays_in_the_jitter_range(attempt in 0u32..40, random: u64) {
        let p = HealthPolicy::default();
        let ceiling = Duration::from_millis(250).saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX)).min(Duration::from_secs(30));
        prop_assert!(p.backoff(attempt, random) <= ceiling);
    }
}

#[test]
fn backoff_jitter_is_spread() {
    let p = HealthPolicy::default();
    let mut rng = Rng(3);
    let mut deciles = [0u32; 10];
    for _ in 0..10_000 {
        let d = p.backoff(2, rng.next());
        deciles[(d.as_nanos() * 10 / 1_000_000_001) as usize] += 1;
    }
    assert!(
        deciles.iter().all(|n| (800..1_200).contains(n)),
        "{deciles:?}"
    );
}

#[test]
fn health_goes_down_after_the_threshold_and_up_after_a_probe() {
    let p = HealthPolicy::try_new(3, Duration::from_millis(100), Duration::from_secs(1)).unwrap();
    let mut h = Health::new(p);
    let t0 = Instant::now();
    assert!(h.is_up());
    assert_eq!(h.on_failure(t0, 0), Change::Same);
    assert_eq!(h.on_failure(t0, 0), Change::Same);
    assert_eq!(h.on_success(), Change::Same, "one success resets the count");
    assert_eq!(h.failures(), 0);
    assert_eq!(h.on_failure(t0, 0), Change::Same);
    assert_eq!(h.on_failure(t0, 0), Change::Same);
    assert_eq!(h.on_failure(t0, u64::MAX), Change::WentDown);
    assert!(!h.is_up());
    let first = h.next_probe().unwrap();
    assert_eq!(first - t0, Duration::from_millis(100));
    assert!(!h.probe_due(first - Duration::from_nanos(1)));
    assert!(h.probe_due(first));
    assert_eq!(
        h.on_failure(first, 0),
        Change::Same,
        "late failures keep the schedule"
    );
    assert_eq!(h.next_probe(), Some(first));
    // Failed probes double the ceiling: 200 ms, 400 ms, ... capped at 1 s.
    let mut now = first;
    for want in [200, 400, 800, 1_000, 1_000] {
        assert_eq!(h.on_probe(now, false, u64::MAX), Change::Same);
        let next = h.next_probe().unwrap();
        assert_eq!((next - now).as_millis(), want);
        now = next;
    }
    assert_eq!(h.on_probe(now, true, 0), Change::CameUp);
    assert!(h.is_up() && h.next_probe().is_none());
    assert_eq!(
        h.on_probe(now, false, 0),
        Change::Same,
        "probes while up change nothing"
    );
    // A late success while down also brings it back.
    for _ in 0..3 {
        h.on_failure(now, 0);
    }
    assert_eq!(h.on_success(), Change::CameUp);
    let one = HealthPolicy::try_new(1, Duration::from_millis(1), Duration::from_millis(1)).unwrap();
    assert_eq!(
        Health::new(one).on_failure(now, 0),
        Change::WentDown,
        "threshold 1: the first failure"
    );
}

#[test]
fn an_ended_endpoint_stays_down_and_is_never_probed() {
    let p = HealthPolicy::try_new(3, Duration::from_millis(100), Duration::from_secs(1)).unwrap();
    let now = Instant::now();
    let mut h = Health::new(p);
    // Ended at once, whatever the failure threshold.
    assert_eq!(h.end(), Change::WentDown);
    assert!(!h.is_up() && h.is_ended());
    assert_eq!(h.next_probe(), None);
    assert!(!h.probe_due(now + Duration::from_secs(3600)));
    // Nothing brings it back: late outcomes of batches sent before.
    assert_eq!(h.on_success(), Change::Same);
    assert_eq!(h.on_probe(now, true, 0), Change::Same);
    assert_eq!(h.on_failure(now, 0), Change::Same);
    assert!(h.is_ended() && h.next_probe().is_none());
    // A down endpoint ends too, and its probe schedule goes.
    let mut down = Health::new(p);
    for _ in 0..3 {
        down.on_failure(now, 0);
    }
    assert_eq!(down.end(), Change::Same);
    assert_eq!(down.next_probe(), None);
}

/// `cargo test --release -p lbwitness balance::tests::pick_cost -- --ignored --nocapture`
#[test]
#[ignore = "timing; run in release"]
fn pick_cost() {
    for s in [
        Strategy::RoundRobin,
        Strategy::LeastOutstanding,
        Strategy::ConsistentHash,
        Strategy::Failover,
    ] {
        let mut b = balancer(s, 3);
        let mut rng = Rng(9);
        let keys: Vec<u64> = (0..4096).map(|_| rng.next()).collect();
        let mut load = [0u64; 3];
        let n = 5_000_000u32;
        let start = Instant::now();
        for i in 0..n {
            let e = b
                .pick(
                    keys[i as usize % 4096],
                    std::hint::black_box(&[true, true, true]),
                    &load,
                )
                .unwrap();
            // Keep loads moving so the bound is sometimes hit.
            load[e] = (load[e] + 1) % 64;
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("pick() {s:?}, 3 endpoints: {ns:.1} ns");
    }
}

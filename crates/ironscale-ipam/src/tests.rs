use super::Strategy;
use super::*;
use proptest::prelude::{
    any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
};
use proptest::strategy::Strategy as _;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}
fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}
fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn defaults_sequential_start_at_first_host() {
    let mut a = Allocator::new(
        Some(DEFAULT_V4_PREFIX),
        Some(DEFAULT_V6_PREFIX),
        Strategy::Sequential,
    )
    .unwrap();
    assert_eq!(DEFAULT_V4_PREFIX.to_string(), "100.64.0.0/10");
    assert_eq!(DEFAULT_V6_PREFIX.to_string(), "fd7a:115c:a1e0::/48");
    let mut r = rng(0);
    assert_eq!(
        a.allocate(&mut r).unwrap(),
        (Some(ip4("100.64.0.1")), Some(ip6("fd7a:115c:a1e0::1")))
    );
    assert_eq!(
        a.allocate(&mut r).unwrap(),
        (Some(ip4("100.64.0.2")), Some(ip6("fd7a:115c:a1e0::2")))
    );
    assert_eq!(a.allocated_count(), (2, 2));
    assert!(a.is_allocated(IpAddr::V4(ip4("100.64.0.2"))));
}

#[test]
fn network_and_broadcast_are_never_used_and_exhaustion_errors() {
    let mut a = Allocator::new(Some(v4("10.9.8.0/30")), None, Strategy::Sequential).unwrap();
    let mut r = rng(0);
    assert_eq!(a.allocate(&mut r).unwrap(), (Some(ip4("10.9.8.1")), None));
    assert_eq!(a.allocate(&mut r).unwrap(), (Some(ip4("10.9.8.2")), None));
    assert_eq!(
        a.allocate(&mut r),
        Err(IpamError::Exhausted("10.9.8.0/30".into()))
    );
    // Released addresses come back after wrapping.
    assert!(a.release(IpAddr::V4(ip4("10.9.8.1"))));
    assert!(!a.release(IpAddr::V4(ip4("10.9.8.1"))));
    assert_eq!(a.allocate(&mut r).unwrap(), (Some(ip4("10.9.8.1")), None));
    // /31 and /32 have no host addresses.
    for p in ["10.0.0.0/31", "10.0.0.7/32"] {
        assert!(matches!(
            Allocator::new(Some(v4(p)), None, Strategy::Sequential),
            Err(IpamError::EmptyPrefix(_))
        ));
    }
    assert_eq!(
        Allocator::new(None, None, Strategy::Random).unwrap_err(),
        IpamError::NoPrefixes
    );
}

#[test]
fn sequential_continues_after_last_and_wraps() {
    let mut a = Allocator::new(Some(v4("10.0.0.0/29")), None, Strategy::Sequential).unwrap();
    let mut r = rng(0);
    let got: Vec<_> = (0..3)
        .map(|_| a.allocate(&mut r).unwrap().0.unwrap())
        .collect();
    assert_eq!(got, [ip4("10.0.0.1"), ip4("10.0.0.2"), ip4("10.0.0.3")]);
    a.release(IpAddr::V4(ip4("10.0.0.1")));
    // Not reused at once: continue after the last one handed out.
    assert_eq!(a.allocate(&mut r).unwrap().0, Some(ip4("10.0.0.4")));
    a.reserve(IpAddr::V4(ip4("10.0.0.5"))).unwrap();
    assert_eq!(a.allocate(&mut r).unwrap().0, Some(ip4("10.0.0.6")));
    // .7 is the broadcast address: wrap around to the freed .1.
    assert_eq!(a.allocate(&mut r).unwrap().0, Some(ip4("10.0.0.1")));
    assert!(a.allocate(&mut r).is_err());
}

#[test]
fn tailscale_reserved_v4_ranges_are_skipped() {
    let mut r = rng(0);
    // 100.100.100.0/24 (incl. 100.100.100.100) is skipped.
    let mut a = Allocator::new(Some(v4("100.100.100.0/23")), None, Strategy::Sequential).unwrap();
    assert_eq!(a.allocate(&mut r).unwrap().0, Some(ip4("100.100.101.0")));
    assert!(!a.is_allocatable(IpAddr::V4(ip4("100.100.100.100"))));
    assert!(!a.is_allocatable(IpAddr::V4(ip4("100.100.100.101"))));
    // 100.115.92.0/23 (ChromeOS) is skipped, entirely.
    let mut a = Allocator::new(Some(v4("100.115.92.0/22")), None, Strategy::Random).unwrap();
    let mut n = 0;
    while let Ok((Some(ip), None)) = a.allocate(&mut r) {
        let o = ip.octets();
        assert!(o[2] >= 94 && ip != ip4("100.115.95.255"), "{ip}");
        n += 1;
    }
    assert_eq!(n, 1024 - 512 - 1);
    // A prefix with nothing but reserved addresses is refused.
    for p in ["100.115.92.0/23", "100.100.100.100/30"] {
        assert!(matches!(
            Allocator::new(Some(v4(p)), None, Strategy::Sequential),
            Err(IpamError::EmptyPrefix(_))
        ));
    }
}

#[test]
fn tailscale_reserved_v6_addresses_are_skipped() {
    let mut a =
        Allocator::new(None, Some(v6("fd7a:115c:a1e0::/120")), Strategy::Sequential).unwrap();
    let mut r = rng(0);
    let mut seen = HashSet::new();
    while let Ok((None, Some(ip))) = a.allocate(&mut r) {
        assert!(seen.insert(ip));
    }
    assert_eq!(seen.len(), 256 - 2 - 1);
    assert!(!seen.contains(&ip6("fd7a:115c:a1e0::53")));
    assert!(!seen.contains(&ip6("fd7a:115c:a1e0::")));
    assert!(!seen.contains(&ip6("fd7a:115c:a1e0::ff")));
    // The 4via6 /64 is skipped too.
    let mut a = Allocator::new(
        None,
        Some(v6("fd7a:115c:a1e0:b1a::/63")),
        Strategy::Sequential,
    )
    .unwrap();
    assert_eq!(
        a.allocate(&mut r).unwrap().1,
        Some(ip6("fd7a:115c:a1e0:b1b::"))
    );
    assert_eq!(
        a.reserve(IpAddr::V6(ip6("fd7a:115c:a1e0:b1a::5"))),
        Err(IpamError::ReservedAddress(IpAddr::V6(ip6(
            "fd7a:115c:a1e0:b1a::5"
        ))))
    );
}

#[test]
fn allocation_is_all_or_nothing() {
    let mut a = Allocator::new(
        Some(v4("10.0.0.0/30")),
        Some(v6("fd00::/64")),
        Strategy::Sequential,
    )
    .unwrap();
    let mut r = rng(0);
    a.allocate(&mut r).unwrap();
    a.allocate(&mut r).unwrap();
    assert!(matches!(a.allocate(&mut r), Err(IpamError::Exhausted(_))));
    assert_eq!(
        a.allocated_count(),
        (2, 2),
        "no IPv6 address leaked by the failed call"
    );
}

#[test]
fn reserve_checks_and_blocks() {
    let mut a = Allocator::new(Some(v4("100.64.0.0/24")), None, Strategy::Sequential).unwrap();
    let ip = |s: &str| IpAddr::V4(ip4(s));
    a.reserve(ip("100.64.0.1")).unwrap();
    a.reserve(ip("100.64.0.2")).unwrap();
    assert_eq!(
        a.reserve(ip("100.64.0.2")),
        Err(IpamError::AlreadyAllocated(ip("100.64.0.2")))
    );
    assert_eq!(
        a.reserve(ip("100.64.1.1")),
        Err(IpamError::OutsidePrefix(ip("100.64.1.1")))
    );
    assert_eq!(
        a.reserve(ip("100.64.0.0")),
        Err(IpamError::OutsidePrefix(ip("100.64.0.0")))
    );
    assert_eq!(
        a.reserve(ip("100.64.0.255")),
        Err(IpamError::OutsidePrefix(ip("100.64.0.255")))
    );
    let six = IpAddr::V6(ip6("fd7a:115c:a1e0::1"));
    assert_eq!(a.reserve(six), Err(IpamError::OutsidePrefix(six)));
    assert!(!a.release(six));
    assert_eq!(
        a.allocate(&mut rng(0)).unwrap(),
        (Some(ip4("100.64.0.3")), None)
    );
    assert_eq!(a.allocated_count(), (3, 0));
}

#[test]
fn random_is_deterministic_for_a_seed_and_stays_in_prefix() {
    let run = |seed| {
        let mut a = Allocator::new(
            Some(DEFAULT_V4_PREFIX),
            Some(DEFAULT_V6_PREFIX),
            Strategy::Random,
        )
        .unwrap();
        let mut r = rng(seed);
        (0..50)
            .map(|_| a.allocate(&mut r).unwrap())
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    for (x, y) in &a {
        assert!(DEFAULT_V4_PREFIX.contains(&x.unwrap()));
        assert!(DEFAULT_V6_PREFIX.contains(&y.unwrap()));
    }
    // Random really spreads out (sequential would give 100.64.0.1..50).
    let max_third_octet = a.iter().map(|(x, _)| x.unwrap().octets()[1]).max().unwrap();
    assert!(
        max_third_octet > 64,
        "all addresses in 100.64.x.x: not random"
    );
}

#[test]
fn random_below_is_in_range() {
    let mut r = rng(1);
    for n in [1u128, 2, 3, 255, 1 << 22, (1 << 80) + 3, u128::MAX] {
        for _ in 0..200 {
            assert!(random_below(&mut r, n) < n.max(1));
        }
    }
    // Both values of a 2-element range appear.
    let hits: HashSet<u128> = (0..64).map(|_| random_below(&mut r, 2)).collect();
    assert_eq!(hits.len(), 2);
}

#[test]
fn strategy_text_forms() {
    assert_eq!(
        "sequential".parse::<Strategy>().unwrap(),
        Strategy::Sequential
    );
    assert_eq!("random".parse::<Strategy>().unwrap(), Strategy::Random);
    assert!(matches!(
        "Random".parse::<Strategy>(),
        Err(IpamError::UnknownStrategy(_))
    ));
    assert_eq!(Strategy::Random.to_string(), "random");
}

#[test]
fn ten_thousand_nodes_with_a_loaded_database() {
    let mut a = Allocator::new(
        Some(DEFAULT_V4_PREFIX),
        Some(DEFAULT_V6_PREFIX),
        Strategy::Sequential,
    )
    .unwrap();
    let mut r = rng(3);
    // Start-up: 10k addresses already in use.
    let base = u32::from(ip4("100.64.0.1"));
    for i in 0..10_000u32 {
        a.reserve(IpAddr::V4(Ipv4Addr::from(base + i))).unwrap();
    }
    let mut seen = HashSet::new();
    for _ in 0..10_000 {
        let (x, _) = a.allocate(&mut r).unwrap();
        let x = x.unwrap();
        assert!(u32::from(x) >= base + 10_000);
        assert!(seen.insert(x));
    }
    assert_eq!(a.allocated_count(), (20_000, 10_000));
}

#[test]
fn concurrent_allocations_never_collide() {
    for strategy in [Strategy::Sequential, Strategy::Random] {
        let shared = Arc::new(Mutex::new(
            Allocator::new(
                Some(v4("100.64.0.0/20")),
                Some(v6("fd7a:115c:a1e0::/116")),
                strategy,
            )
            .unwrap(),
        ));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut r = rng(100 + t);
                    let mut mine = Vec::new();
                    for i in 0..600 {
                        let got = shared.lock().unwrap().allocate(&mut r).unwrap();
                        mine.push(got);
                        // Give some back now and then.
                        if i % 7 == 0 {
                            let (x, y) = mine.remove(0);
                            let mut g = shared.lock().unwrap();
                            assert!(g.release(IpAddr::V4(x.unwrap())));
                            assert!(g.release(IpAddr::V6(y.unwrap())));
                        }
                    }
                    mine
                })
            })
            .collect();
        let all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let v4s: HashSet<_> = all.iter().map(|(x, _)| x.unwrap()).collect();
        let v6s: HashSet<_> = all.iter().map(|(_, y)| y.unwrap()).collect();
        assert_eq!(v4s.len(), all.len(), "duplicate IPv4 address");
        assert_eq!(v6s.len(), all.len(), "duplicate IPv6 address");
        assert_eq!(
            shared.lock().unwrap().allocated_count(),
            (all.len(), all.len())
        );
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate,
    Release(usize),
    Reserve(u32),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Allocate),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<u32>().prop_map(Op::Reserve),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn no_duplicates_and_always_inside_the_prefix(
        random in any::<bool>(),
        seed in any::<u64>(),
        // Small prefixes so that exhaustion and wrap-around happen.
        v4_len in 22u8..=30,
        v4_base in any::<u32>(),
        ops in prop::collection::vec(op(), 1..400),
    ) {
        let strategy = if random { Strategy::Random } else { Strategy::Sequential };
        // Bias the prefix towards Tailscale's reserved ranges half of the time.
        let base = if seed % 2 == 0 { u32::from(ip4("100.115.88.0")) ^ (v4_base & 0x3ff) } else { v4_base };
        let net4 = Ipv4Net::new(Ipv4Addr::from(base), v4_len).unwrap().trunc();
        let net6 = v6("fd7a:115c:a1e0::/118");
        let Ok(mut a) = Allocator::new(Some(net4), Some(net6), strategy) else {
            // Only a prefix with nothing but reserved hosts may be refused.
            prop_assert!(net4
                .hosts()
                .all(|h| RESERVED_V4.iter().any(|&(s, e)| (s..=e).contains(&u32::from(h)))));
            return Ok(());
        };
        let mut r = rng(seed);
        let mut live: Vec<(Ipv4Addr, Ipv6Addr)> = Vec::new();
        let mut used4: HashSet<Ipv4Addr> = HashSet::new();
        let mut used6: HashSet<Ipv6Addr> = HashSet::new();
        for op in ops {
            match op {
                Op::Allocate => match a.allocate(&mut r) {
                    Ok((Some(x), Some(y))) => {
                        prop_assert!(net4.contains(&x) && x != net4.network() && x != net4.broadcast());
                        prop_assert!(net6.contains(&y) && y != net6.network() && y != net6.broadcast());
                        prop_assert!(a.is_allocatable(IpAddr::V4(x)) && a.is_allocatable(IpAddr::V6(y)));
                        prop_assert!(!RESERVED_V4.iter().any(|&(s, e)| (s..=e).contains(&u32::from(x))));
                        prop_assert!(y != ip6("fd7a:115c:a1e0::53"));
                        prop_assert!(used4.insert(x), "duplicate {}", x);
                        prop_assert!(used6.insert(y), "duplicate {}", y);
                        live.push((x, y));
                    }
                    Ok(other) => prop_assert!(false, "missing family: {:?}", other),
                    Err(IpamError::Exhausted(_)) => {
                        // Exhaustion is only allowed when a family really is full.
                        let free4 = net4.hosts().filter(|h| a.is_allocatable(IpAddr::V4(*h)) && !used4.contains(h)).count();
                        let free6 = 1024 - 3 - used6.len();
                        prop_assert!(free4 == 0 || free6 == 0, "spurious exhaustion: {} v4 free", free4);
                    }
                    Err(e) => prop_assert!(false, "unexpected error {}", e),
                },
                Op::Release(i) if !live.is_empty() => {
                    let (x, y) = live.swap_remove(i % live.len());
                    prop_assert!(a.release(IpAddr::V4(x)));
                    prop_assert!(a.release(IpAddr::V6(y)));
                    used4.remove(&x);
                    used6.remove(&y);
                }
                Op::Release(_) => {}
                Op::Reserve(off) => {
                    let ip = Ipv4Addr::from(u32::from(net4.network()).wrapping_add(off % 1100));
                    let res = a.reserve(IpAddr::V4(ip));
                    let expect_ok = a.is_allocatable(IpAddr::V4(ip)) && !used4.contains(&ip);
                    prop_assert_eq!(res.is_ok(), expect_ok, "reserve {} gave {:?}", ip, res);
                    if res.is_ok() {
                        used4.insert(ip);
                    }
                }
            }
            prop_assert_eq!(a.allocated_count().0, used4.len());
            prop_assert_eq!(a.allocated_count().1, used6.len());
        }
    }
}

#[test]
fn allocate_families_gives_only_what_is_asked() {
    let mut a = Allocator::new(
        Some(v4("100.64.0.0/30")),
        Some(v6("fd7a:115c:a1e0::/120")),
        Strategy::Sequential,
    )
    .unwrap();
    let mut r = rng(1);
    // Only IPv6: the v4 pool is untouched.
    let (a4, a6) = a.allocate_families(false, true, &mut r).unwrap();
    assert_eq!((a4, a6), (None, Some(ip6("fd7a:115c:a1e0::1"))));
    assert_eq!(a.allocated_count(), (0, 1));
    let (a4, a6) = a.allocate_families(true, false, &mut r).unwrap();
    assert_eq!((a4, a6), (Some(ip4("100.64.0.1")), None));
    assert_eq!(a.allocated_count(), (1, 1));
    // Both, then the v4 pool (two hosts) is exhausted: nothing is taken.
    a.allocate_families(true, true, &mut r).unwrap();
    assert_eq!(a.allocated_count(), (2, 2));
    assert!(matches!(
        a.allocate_families(true, true, &mut r),
        Err(IpamError::Exhausted(_))
    ));
    assert_eq!(a.allocated_count(), (2, 2));
    // A family that is not configured gets nothing.
    let mut only4 = Allocator::new(Some(v4("100.64.0.0/24")), None, Strategy::Sequential).unwrap();
    assert_eq!(
        only4.allocate_families(false, true, &mut r).unwrap(),
        (None, None)
    );
}

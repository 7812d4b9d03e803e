//! IP address allocation for tailnet nodes.
//!
//! Pure: no IO, no clock, no global RNG (the caller passes one in). Addresses come
//! from the configured prefixes (Headscale's `prefixes.v4`, default `100.64.0.0/10`,
//! and `prefixes.v6`, default `fd7a:115c:a1e0::/48`) with either a sequential or a
//! random strategy (`prefixes.allocation`).
//!
//! Never handed out:
//! * the first (network) and last (broadcast / all-ones) address of each prefix;
//! * `100.100.100.0/24` (Tailscale services: `100.100.100.100` is the MagicDNS
//!   resolver, and the rest of the /24 is reserved for more of them);
//! * `100.115.92.0/23` (Tailscale's reserved ChromeOS VM range);
//! * `fd7a:115c:a1e0::53` (the IPv6 MagicDNS resolver);
//! * `fd7a:115c:a1e0:b1a::/64` (Tailscale's 4via6 range);
//! * anything outside the prefix.
//!
//! The set of used addresses is a `BTreeSet` per family, so allocation is
//! `O(log n + k)` where `k` is the length of the run of used addresses skipped.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};
pub use rand::RngCore;

/// Headscale's default IPv4 prefix (Tailscale's CGNAT range).
pub const DEFAULT_V4_PREFIX: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10) {
    Ok(n) => n,
    Err(_) => panic!("valid prefix"),
};
/// Headscale's default IPv6 prefix (Tailscale's ULA range).
pub const DEFAULT_V6_PREFIX: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0), 48) {
        Ok(n) => n,
        Err(_) => panic!("valid prefix"),
    };

/// Reserved IPv4 ranges (inclusive), sorted.
const RESERVED_V4: &[(u32, u32)] = &[
    // 100.100.100.0/24: Tailscale service addresses (100.100.100.100 = MagicDNS).
    (
        u32::from_be_bytes([100, 100, 100, 0]),
        u32::from_be_bytes([100, 100, 100, 255]),
    ),
    // 100.115.92.0/23: ChromeOS VM range.
    (
        u32::from_be_bytes([100, 115, 92, 0]),
        u32::from_be_bytes([100, 115, 93, 255]),
    ),
];

const TS_V6_BASE: u128 = 0xfd7a_115c_a1e0_u128 << 80;
/// Reserved IPv6 ranges (inclusive), sorted.
const RESERVED_V6: &[(u128, u128)] = &[
    // fd7a:115c:a1e0::53: MagicDNS resolver.
    (TS_V6_BASE | 0x53, TS_V6_BASE | 0x53),
    // fd7a:115c:a1e0:b1a::/64: 4via6.
    (
        TS_V6_BASE | (0xb1a << 64),
        TS_V6_BASE | (0xb1a << 64) | (u64::MAX as u128),
    ),
];

/// How the next address is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The next free address after the last one handed out, wrapping around.
    #[default]
    Sequential,
    /// A uniformly random start, then the next free address from there.
    Random,
}

impl FromStr for Strategy {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, IpamError> {
        match s {
            "sequential" => Ok(Strategy::Sequential),
            "random" => Ok(Strategy::Random),
            other => Err(IpamError::UnknownStrategy(other.to_owned())),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Sequential => "sequential",
            Strategy::Random => "random",
        })
    }
}

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Neither an IPv4 nor an IPv6 prefix is configured.
    #[error("no IP prefix configured: at least one of prefixes.v4 and prefixes.v6 is required")]
    NoPrefixes,
    /// A configured prefix has no allocatable address at all.
    #[error("prefix {0} has no allocatable address")]
    EmptyPrefix(String),
    /// Every allocatable address of a prefix is in use.
    #[error("IP prefix {0} is exhausted")]
    Exhausted(String),
    /// The address is outside the configured prefix of its family (or that family
    /// is not configured).
    #[error("{0} is outside the configured prefixes")]
    OutsidePrefix(IpAddr),
    /// The address may never be assigned to a node.
    #[error("{0} is a reserved address")]
    ReservedAddress(IpAddr),
    /// The address is already in use.
    #[error("{0} is already allocated")]
    AlreadyAllocated(IpAddr),
    /// Unknown `prefixes.allocation` value.
    #[error("unknown allocation strategy {0:?} (expected \"sequential\" or \"random\")")]
    UnknownStrategy(String),
}

/// One family's pool. Addresses are stored as `u128` (IPv4 in the low 32 bits).
#[derive(Debug, Clone)]
struct Pool {
    /// Prefix text, for error messages.
    name: String,
    /// Lowest and highest allocatable address (network/broadcast excluded).
    lo: u128,
    hi: u128,
    reserved: Vec<(u128, u128)>,
    used: BTreeSet<u128>,
    /// The last address handed out (sequential strategy continues after it).
    cursor: Option<u128>,
}

impl Pool {
    fn new(name: String, network: u128, last: u128, reserved: Vec<(u128, u128)>) -> Option<Self> {
        // Exclude the network and the broadcast/all-ones address.
        let lo = network.checked_add(1)?;
        let hi = last.checked_sub(1)?;
        if lo > hi {
            return None;
        }
        let pool = Pool {
            name,
            lo,
            hi,
            reserved,
            used: BTreeSet::new(),
            cursor: None,
        };
        // A prefix that lies entirely inside reserved ranges is useless.
        pool.first_free_in(lo, hi)?;
        Some(pool)
    }

    fn contains(&self, a: u128) -> bool {
        (self.lo..=self.hi).contains(&a)
    }

    fn reserved_range_at(&self, a: u128) -> Option<(u128, u128)> {
        self.reserved
            .iter()
            .copied()
            .find(|&(s, e)| s <= a && a <= e)
    }

    /// The lowest free address in `[from, to]`, if any.
    fn first_free_in(&self, mut c: u128, to: u128) -> Option<u128> {
        loop {
            if c > to {
                return None;
            }
            if let Some((_, end)) = self.reserved_range_at(c) {
                c = end.checked_add(1)?;
                continue;
            }
            // Skip the run of used addresses starting at `c`, if any.
            let mut moved = false;
            for &u in self.used.range(c..) {
                if u != c {
                    break;
                }
                c = c.checked_add(1)?;
                moved = true;
            }
            if !moved {
                return Some(c);
            }
        }
    }

    fn pick<R: RngCore + ?Sized>(
        &self,
        strategy: Strategy,
        rng: &mut R,
    ) -> Result<u128, IpamError> {
        let start = match strategy {
            Strategy::Sequential => match self.cursor {
                Some(c) if c < self.hi => c + 1,
                _ => self.lo,
            },
            Strategy::Random => self.lo + random_below(rng, self.hi - self.lo + 1),
        };
        self.first_free_in(start, self.hi)
            .or_else(|| {
                start
                    .checked_sub(1)
                    .and_then(|end| self.first_free_in(self.lo, end))
            })
            .ok_or_else(|| IpamError::Exhausted(self.name.clone()))
    }

    fn take(&mut self, a: u128) {
        self.used.insert(a);
        self.cursor = Some(a);
    }
}

/// A uniform random number in `[0, n)` (`n > 0`), by rejection sampling.
fn random_below<R: RngCore + ?Sized>(rng: &mut R, n: u128) -> u128 {
    if n <= 1 {
        return 0;
    }
    let bits = 128 - (n - 1).leading_zeros();
    let mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    loop {
        let r = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & mask;
        if r < n {
            return r;
        }
    }
}

fn v4_of(a: u128) -> Ipv4Addr {
    // Pool v4 addresses always fit in 32 bits.
    Ipv4Addr::from(a as u32)
}

/// Hands out node addresses from the configured prefixes.
///
/// Not thread-safe by itself: share it as `Arc<Mutex<Allocator>>`.
#[derive(Debug, Clone)]
pub struct Allocator {
    v4: Option<Pool>,
    v6: Option<Pool>,
    v4_net: Option<Ipv4Net>,
    v6_net: Option<Ipv6Net>,
    strategy: Strategy,
}

impl Allocator {
    /// An allocator for the given prefixes (host bits are ignored). At least one
    /// family must be configured, and each configured prefix must hold at least
    /// one allocatable address.
    pub fn new(
        v4: Option<Ipv4Net>,
        v6: Option<Ipv6Net>,
        strategy: Strategy,
    ) -> Result<Self, IpamError> {
        if v4.is_none() && v6.is_none() {
            return Err(IpamError::NoPrefixes);
        }
        let v4 = v4.map(|n| n.trunc());
        let v6 = v6.map(|n| n.trunc());
        let pool4 = match v4 {
            None => None,
            Some(n) => Some(
                Pool::new(
                    n.to_string(),
                    u128::from(u32::from(n.network())),
                    u128::from(u32::from(n.broadcast())),
                    RESERVED_V4
                        .iter()
                        .map(|&(s, e)| (u128::from(s), u128::from(e)))
                        .collect(),
                )
                .ok_or_else(|| IpamError::EmptyPrefix(n.to_string()))?,
            ),
        };
        let pool6 = match v6 {
            None => None,
            Some(n) => Some(
                Pool::new(
                    n.to_string(),
                    u128::from(n.network()),
                    u128::from(n.broadcast()),
                    RESERVED_V6.to_vec(),
                )
                .ok_or_else(|| IpamError::EmptyPrefix(n.to_string()))?,
            ),
        };
        Ok(Allocator {
            v4: pool4,
            v6: pool6,
            v4_net: v4,
            v6_net: v6,
            strategy,
        })
    }

    /// The configured IPv4 prefix.
    pub fn v4_prefix(&self) -> Option<Ipv4Net> {
        self.v4_net
    }

    /// The configured IPv6 prefix.
    pub fn v6_prefix(&self) -> Option<Ipv6Net> {
        self.v6_net
    }

    /// The allocation strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Allocate one address per configured family. Either both (configured)
    /// families get an address or nothing is allocated.
    pub fn allocate<R: RngCore + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), IpamError> {
        let strategy = self.strategy;
        let a4 = match &self.v4 {
            Some(p) => Some(p.pick(strategy, rng)?),
            None => None,
        };
        let a6 = match &self.v6 {
            Some(p) => Some(p.pick(strategy, rng)?),
            None => None,
        };
        // Commit only once both picks succeeded.
        if let (Some(p), Some(a)) = (self.v4.as_mut(), a4) {
            p.take(a);
        }
        if let (Some(p), Some(a)) = (self.v6.as_mut(), a6) {
            p.take(a);
        }
        Ok((a4.map(v4_of), a6.map(Ipv6Addr::from)))
    }

    /// Allocate an address of the configured families asked for only
    /// (`v4`, `v6`): what a node that lacks one family needs (`nodes
    /// backfillips`). A family asked for but not configured gets `None`.
    /// Either every asked-for configured family gets an address or nothing
    /// is allocated.
    pub fn allocate_families<R: RngCore + ?Sized>(
        &mut self,
        v4: bool,
        v6: bool,
        rng: &mut R,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), IpamError> {
        let strategy = self.strategy;
        let a4 = match (&self.v4, v4) {
            (Some(p), true) => Some(p.pick(strategy, rng)?),
            _ => None,
        };
        let a6 = match (&self.v6, v6) {
            (Some(p), true) => Some(p.pick(strategy, rng)?),
            _ => None,
        };
        if let (Some(p), Some(a)) = (self.v4.as_mut(), a4) {
            p.take(a);
        }
        if let (Some(p), Some(a)) = (self.v6.as_mut(), a6) {
            p.take(a);
        }
        Ok((a4.map(v4_of), a6.map(Ipv6Addr::from)))
    }

    fn pool_for(&self, ip: IpAddr) -> (Option<&Pool>, u128) {
        match ip {
            IpAddr::V4(a) => (self.v4.as_ref(), u128::from(u32::from(a))),
            IpAddr::V6(a) => (self.v6.as_ref(), u128::from(a)),
        }
    }

    fn pool_for_mut(&mut self, ip: IpAddr) -> (Option<&mut Pool>, u128) {
        match ip {
            IpAddr::V4(a) => (self.v4.as_mut(), u128::from(u32::from(a))),
            IpAddr::V6(a) => (self.v6.as_mut(), u128::from(a)),
        }
    }

    /// Mark an address as used, e.g. one loaded from the database at start-up.
    ///
    /// Errors (nothing is recorded) if the address is outside the configured
    /// prefix of its family, is a reserved address, or is already in use. A node
    /// whose stored address fails here keeps it, but the allocator will not
    /// protect it: callers should log such addresses.
    pub fn reserve(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let (pool, a) = self.pool_for_mut(ip);
        let pool = pool.ok_or(IpamError::OutsidePrefix(ip))?;
        if !pool.contains(a) {
            return Err(IpamError::OutsidePrefix(ip));
        }
        if pool.reserved_range_at(a).is_some() {
            return Err(IpamError::ReservedAddress(ip));
        }
        if !pool.used.insert(a) {
            return Err(IpamError::AlreadyAllocated(ip));
        }
        Ok(())
    }

    /// Return an address to the pool. Returns whether it was in use.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        match self.pool_for_mut(ip) {
            (Some(p), a) => p.used.remove(&a),
            (None, _) => false,
        }
    }

    /// Whether `ip` is currently in use.
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        match self.pool_for(ip) {
            (Some(p), a) => p.used.contains(&a),
            (None, _) => false,
        }
    }

    /// Whether `ip` could ever be handed out (inside a prefix, not reserved).
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        match self.pool_for(ip) {
            (Some(p), a) => p.contains(a) && p.reserved_range_at(a).is_none(),
            (None, _) => false,
        }
    }

    /// Number of IPv4 and IPv6 addresses in use.
    pub fn allocated_count(&self) -> (usize, usize) {
        (
            self.v4.as_ref().map_or(0, |p| p.used.len()),
            self.v6.as_ref().map_or(0, |p| p.used.len()),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

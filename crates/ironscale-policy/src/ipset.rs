//! Sets of IP addresses as sorted, merged inclusive ranges (IPv4 and IPv6
//! kept apart), and the address ranges Tailscale treats specially.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A set of addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

fn v4_bounds(n: &Ipv4Net) -> (u32, u32) {
    (u32::from(n.network()), u32::from(n.broadcast()))
}

fn v6_bounds(n: &Ipv6Net) -> (u128, u128) {
    (u128::from(n.network()), u128::from(n.broadcast()))
}

fn normalize<T: Copy + Ord + One>(v: &mut Vec<(T, T)>) {
    if v.len() < 2 {
        return;
    }
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for &(a, b) in v.iter() {
        if let Some(last) = out.last_mut() {
            if a <= last.1 || (last.1 != T::MAX && a == last.1.inc()) {
                if b > last.1 {
                    last.1 = b;
                }
                continue;
            }
        }
        out.push((a, b));
    }
    *v = out;
}

trait One: Sized {
    const MAX: Self;
    fn inc(self) -> Self;
}
impl One for u32 {
    const MAX: Self = u32::MAX;
    fn inc(self) -> Self {
        self + 1
    }
}
impl One for u128 {
    const MAX: Self = u128::MAX;
    fn inc(self) -> Self {
        self + 1
    }
}

fn overlaps<T: Ord + Copy>(set: &[(T, T)], a: T, b: T) -> bool {
    // First range whose end is >= a.
    let i = set.partition_point(|r| r.1 < a);
    i < set.len() && set[i].0 <= b
}

fn covers<T: Ord + Copy>(set: &[(T, T)], a: T, b: T) -> bool {
    let i = set.partition_point(|r| r.1 < a);
    i < set.len() && set[i].0 <= a && set[i].1 >= b
}

impl IpSet {
    pub fn new() -> Self {
        IpSet::default()
    }

    pub fn from_prefix(p: &IpNet) -> Self {
        let mut s = IpSet::new();
        s.add_prefix(p);
        s
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn add_prefix(&mut self, p: &IpNet) {
        match p {
            IpNet::V4(n) => {
                self.v4.push(v4_bounds(n));
                normalize(&mut self.v4);
            }
            IpNet::V6(n) => {
                self.v6.push(v6_bounds(n));
                normalize(&mut self.v6);
            }
        }
    }

    pub fn add_addr(&mut self, a: IpAddr) {
        self.add_range(a, a);
    }

    /// Add `a..=b`; mismatched families or reversed bounds are ignored.
    pub fn add_range(&mut self, a: IpAddr, b: IpAddr) {
        match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => {
                self.v4.push((a.into(), b.into()));
                normalize(&mut self.v4);
            }
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => {
                self.v6.push((a.into(), b.into()));
                normalize(&mut self.v6);
            }
            _ => {}
        }
    }

    pub fn add_set(&mut self, o: &IpSet) {
        self.v4.extend_from_slice(&o.v4);
        self.v6.extend_from_slice(&o.v6);
        normalize(&mut self.v4);
        normalize(&mut self.v6);
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => {
                let x = u32::from(a);
                covers(&self.v4, x, x)
            }
            IpAddr::V6(a) => {
                let x = u128::from(a);
                covers(&self.v6, x, x)
            }
        }
    }

    pub fn overlaps_prefix(&self, p: &IpNet) -> bool {
        match p {
            IpNet::V4(n) => {
                let (a, b) = v4_bounds(n);
                overlaps(&self.v4, a, b)
            }
            IpNet::V6(n) => {
                let (a, b) = v6_bounds(n);
                overlaps(&self.v6, a, b)
            }
        }
    }

    pub fn covers_prefix(&self, p: &IpNet) -> bool {
        match p {
            IpNet::V4(n) => {
                let (a, b) = v4_bounds(n);
                covers(&self.v4, a, b)
            }
            IpNet::V6(n) => {
                let (a, b) = v6_bounds(n);
                covers(&self.v6, a, b)
            }
        }
    }

    pub fn overlaps(&self, o: &IpSet) -> bool {
        o.v4.iter().any(|&(a, b)| overlaps(&self.v4, a, b))
            || o.v6.iter().any(|&(a, b)| overlaps(&self.v6, a, b))
    }

    /// Whether every address of `o` is in `self`.
    pub fn is_superset(&self, o: &IpSet) -> bool {
        o.v4.iter().all(|&(a, b)| covers(&self.v4, a, b))
            && o.v6.iter().all(|&(a, b)| covers(&self.v6, a, b))
    }

    /// The ranges of the set as `(first, last)` address pairs.
    pub fn ranges(&self) -> Vec<(IpAddr, IpAddr)> {
        let mut out = Vec::with_capacity(self.v4.len() + self.v6.len());
        for &(a, b) in &self.v4 {
            out.push((IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b))));
        }
        for &(a, b) in &self.v6 {
            out.push((IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b))));
        }
        out
    }

    /// The smallest list of CIDR prefixes covering exactly this set.
    pub fn prefixes(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        for &(a, b) in &self.v4 {
            range_to_prefixes_v4(a, b, &mut out);
        }
        for &(a, b) in &self.v6 {
            range_to_prefixes_v6(a, b, &mut out);
        }
        out
    }

    /// Addresses removed: `self \ o`.
    pub fn difference(&self, o: &IpSet) -> IpSet {
        IpSet {
            v4: diff(&self.v4, &o.v4),
            v6: diff(&self.v6, &o.v6),
        }
    }
}

fn diff<T: Copy + Ord + One + Dec>(a: &[(T, T)], b: &[(T, T)]) -> Vec<(T, T)> {
    let mut out = Vec::new();
    for &(mut lo, hi) in a {
        let mut done = false;
        for &(blo, bhi) in b {
            if bhi < lo || blo > hi {
                continue;
            }
            if blo > lo {
                out.push((lo, blo.dec()));
            }
            if bhi >= hi {
                done = true;
                break;
            }
            lo = bhi.inc();
        }
        if !done {
            out.push((lo, hi));
        }
    }
    out
}

trait Dec {
    fn dec(self) -> Self;
}
impl Dec for u32 {
    fn dec(self) -> Self {
        self - 1
    }
}
impl Dec for u128 {
    fn dec(self) -> Self {
        self - 1
    }
}

fn range_to_prefixes_v4(mut a: u32, b: u32, out: &mut Vec<IpNet>) {
    loop {
        let mut len = 32u8;
        // Grow the block while aligned and inside the range.
        while len > 0 {
            let size = 1u64 << (32 - (len - 1));
            let mask = size - 1;
            if (a as u64) & mask != 0 || (a as u64) + mask > b as u64 {
                break;
            }
            len -= 1;
        }
        if let Ok(n) = Ipv4Net::new(Ipv4Addr::from(a), len) {
            out.push(IpNet::V4(n));
        }
        let end = (a as u64) + (1u64 << (32 - len)) - 1;
        if end >= b as u64 {
            break;
        }
        a = (end + 1) as u32;
    }
}

fn range_to_prefixes_v6(mut a: u128, b: u128, out: &mut Vec<IpNet>) {
    loop {
        let mut len = 128u8;
        while len > 0 {
            let bits = 128 - (len - 1) as u32;
            let mask: u128 = if bits >= 128 {
                u128::MAX
            } else {
                (1u128 << bits) - 1
            };
            if a & mask != 0 || a.checked_add(mask).is_none_or(|e| e > b) {
                break;
            }
            len -= 1;
        }
        if let Ok(n) = Ipv6Net::new(Ipv6Addr::from(a), len) {
            out.push(IpNet::V6(n));
        }
        let bits = 128 - len as u32;
        let size_m1: u128 = if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let end = a.saturating_add(size_m1);
        if end >= b {
            break;
        }
        a = end + 1;
    }
}

/// A prefix as Tailscale prints it in filters: a bare address for a single
/// host, otherwise the masked CIDR.
pub fn prefix_string(p: &IpNet) -> String {
    let t = p.trunc();
    if t.prefix_len() == t.max_prefix_len() {
        t.addr().to_string()
    } else {
        t.to_string()
    }
}

/// A single address as a full-length prefix string (`1.2.3.4/32`).
pub fn host_prefix_string(a: IpAddr) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

pub fn host_prefix(a: IpAddr) -> IpNet {
    match a {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, 32).unwrap_or_default()),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, 128).unwrap_or_default()),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|_| IpNet::V4(Ipv4Net::default()))
}

/// 100.64.0.0/10, the range Tailscale takes node IPv4 addresses from.
pub fn cgnat() -> IpNet {
    net("100.64.0.0/10")
}

/// fd7a:115c:a1e0::/48, the range of node IPv6 addresses.
pub fn tailscale_ula() -> IpNet {
    net("fd7a:115c:a1e0::/48")
}

/// 100.115.92.0/23, used by ChromeOS VMs and never given to nodes.
pub fn chromeos_vm() -> IpNet {
    net("100.115.92.0/23")
}

/// What `*` stands for as addresses: the tailnet's own ranges.
pub fn tailnet_ranges() -> IpSet {
    let mut s = IpSet::from_prefix(&cgnat());
    s.add_prefix(&tailscale_ula());
    s.difference(&IpSet::from_prefix(&chromeos_vm()))
}

/// How Tailscale writes `*` in `SrcIPs`.
pub const TAILNET_SRC_STRINGS: [&str; 3] = [
    "100.64.0.0-100.115.91.255",
    "100.115.94.0-100.127.255.255",
    "fd7a:115c:a1e0::/48",
];

/// The public internet as Tailscale reaches it through exit nodes: every
/// IPv4 address outside private, shared and link-local space, and 2000::/3.
pub fn internet() -> IpSet {
    let mut all = IpSet::from_prefix(&net("0.0.0.0/0"));
    let mut private = IpSet::new();
    for p in [
        "10.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ] {
        private.add_prefix(&net(p));
    }
    all = all.difference(&private);
    all.add_prefix(&net("2000::/3"));
    all
}

/// [`internet`], computed once.
pub fn internet_set() -> &'static IpSet {
    static S: std::sync::OnceLock<IpSet> = std::sync::OnceLock::new();
    S.get_or_init(internet)
}

/// How Tailscale writes `autogroup:internet` in `DstPorts`: one entry per
/// range, always as `first-last`.
pub fn internet_strings() -> Vec<String> {
    internet()
        .ranges()
        .into_iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect()
}

/// Whether a route is an exit route (0.0.0.0/0 or ::/0).
pub fn is_exit_route(p: &IpNet) -> bool {
    p.prefix_len() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn merge_and_contains() {
        let mut s = IpSet::new();
        s.add_range(ip("10.0.0.5"), ip("10.0.0.9"));
        s.add_range(ip("10.0.0.10"), ip("10.0.0.20"));
        s.add_addr(ip("fd7a::1"));
        assert_eq!(s.ranges().len(), 2);
        assert!(s.contains(ip("10.0.0.15")));
        assert!(!s.contains(ip("10.0.0.21")));
        assert!(s.contains(ip("fd7a::1")));
        assert!(s.overlaps_prefix(&net("10.0.0.0/29")));
        assert!(!s.overlaps_prefix(&net("10.0.0.0/30")));
    }

    #[test]
    fn tailnet_ranges_match_tailscale() {
        let s = tailnet_ranges();
        let strs: Vec<String> = s.ranges().iter().map(|(a, b)| format!("{a}-{b}")).collect();
        assert_eq!(strs[0], "100.64.0.0-100.115.91.255");
        assert_eq!(strs[1], "100.115.94.0-100.127.255.255");
        assert!(!s.contains(ip("100.115.92.1")));
    }

    #[test]
    fn internet_matches_tailscale() {
        let v = internet_strings();
        assert_eq!(
            v,
            vec![
                "0.0.0.0-9.255.255.255",
                "11.0.0.0-100.63.255.255",
                "100.128.0.0-169.253.255.255",
                "169.255.0.0-172.15.255.255",
                "172.32.0.0-192.167.255.255",
                "192.169.0.0-255.255.255.255",
                "2000::-3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ]
        );
    }

    #[test]
    fn prefixes_cover_exactly() {
        let mut s = IpSet::new();
        s.add_range(ip("10.0.0.1"), ip("10.0.0.6"));
        let p: Vec<String> = s.prefixes().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            p,
            vec!["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        let all = IpSet::from_prefix(&net("::/0"));
        assert_eq!(all.prefixes(), vec![net("::/0")]);
        let all4 = IpSet::from_prefix(&net("0.0.0.0/0"));
        assert_eq!(all4.prefixes(), vec![net("0.0.0.0/0")]);
    }

    #[test]
    fn difference_splits() {
        let a = IpSet::from_prefix(&net("10.0.0.0/24"));
        let b = IpSet::from_prefix(&net("10.0.0.128/25"));
        let d = a.difference(&b);
        assert_eq!(d.prefixes(), vec![net("10.0.0.0/25")]);
    }
}

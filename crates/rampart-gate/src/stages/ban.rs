//! Automatic temporary bans: a client address that keeps failing authentication, hitting limits or sending malformed
//! requests is refused for a while, longer each time, unless the allow list names it.
//!
//! Bans are per client address (a principal is an identity an attacker may not hold; the address is what floods come
//! from), an IPv6 client being its subnet ([`client`]).
//! State is bounded: addresses with no strikes in the window and no ban are forgotten, and past the bound an eighth of
//! the rest at once (see [`Bans::strike`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::BanConfig;

/// An address or a CIDR block, for the allow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    addr: IpAddr,
    prefix: u8,
}

impl IpBlock {
    /// Parses `10.1.2.3`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(text: &str) -> Option<IpBlock> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (
                addr.parse::<IpAddr>().ok()?,
                Some(prefix.parse::<u8>().ok()?),
            ),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpBlock { addr, prefix })
    }

    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address, so a dual-stack listener cannot be used to dodge a ban.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client an address counts as for limits and bans: its [`canonical`] form, and for IPv6 the first `v6_prefix`
/// bits of it (`[limits] ipv6_client_prefix`), the rest zero: a client holding a subnet cannot dodge a limit or a ban
/// by sending from a new address of it.
pub fn client(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

#[derive(Debug)]
struct Entry {
    strikes: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
    bans: u32,
}

/// What a strike led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// Counted; no ban yet (or the client is allowed, or bans are off).
    Counted,
    /// The client is now banned for this long.
    Banned(Duration),
}

/// The ban list.
#[derive(Debug)]
pub struct Bans {
    config: BanConfig,
    allow: Vec<IpBlock>,
    state: Mutex<HashMap<IpAddr, Entry>>,
    max_entries: usize,
    /// IPv6 clients are banned by this prefix ([`client`]).
    v6_prefix: u8,
}

impl Bans {
    /// Builds the list from its (validated) config; IPv6 clients are banned by their first `v6_prefix` bits.
    pub fn new(config: &BanConfig, max_entries: usize, v6_prefix: u8) -> Bans {
        Bans {
            allow: config
                .allow
                .iter()
                .filter_map(|a| IpBlock::parse(a))
                .collect(),
            config: config.clone(),
            state: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
            v6_prefix,
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|block| block.contains(ip))
    }

    /// How long `ip` stays banned, if it is. An address the allow list names never is, even when its subnet is.
    pub fn banned_for(&self, ip: IpAddr) -> Option<Duration> {
        if !self.config.enabled || self.allowed(ip) {
            return None;
        }
        let ip = client(ip, self.v6_prefix);
        let now = Instant::now();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = state.get(&ip)?.banned_until?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// Records a strike against `ip`; the strike that reaches the threshold bans it.
    pub fn strike(&self, ip: IpAddr) -> Strike {
        if !self.config.enabled || self.allowed(ip) {
            return Strike::Counted;
        }
        let ip = client(ip, self.v6_prefix);
        let now = Instant::now();
        let window = Duration::from_secs(self.config.window_secs);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.len() >= self.max_entries && !state.contains_key(&ip) {
            state.retain(|_, e| {
                e.banned_until.is_some_and(|u| u > now)
                    || now.duration_since(e.window_start) < window
                    || e.bans > 0
            });
            if state.len() >= self.max_entries {
                // Every remembered client is striking, banned or was banned before: forget an eighth at once,
                // strikers without a ban first, then the bans that ended or end first.
                rampart_defend::evict_oldest(&mut state, |e| e.banned_until);
            }
        }
        let entry = state.entry(ip).or_insert(Entry {
            strikes: 0,
            window_start: now,
            banned_until: None,
            bans: 0,
        });
        if entry.banned_until.is_some_and(|u| u > now) {
            return Strike::Counted;
        }
        if now.duration_since(entry.window_start) >= window {
            entry.window_start = now;
            entry.strikes = 0;
        }
        entry.strikes += 1;
        if entry.strikes < self.config.strikes {
            return Strike::Counted;
        }
        let factor = 1u64.checked_shl(entry.bans.min(32)).unwrap_or(u64::MAX);
        let secs = self
            .config
            .base_secs
            .saturating_mul(factor)
            .min(self.config.max_secs);
        let length = Duration::from_secs(secs);
        entry.bans = entry.bans.saturating_add(1);
        entry.strikes = 0;
        entry.banned_until = Some(now + length);
        Strike::Banned(length)
    }

    /// Addresses banned right now.
    pub fn active(&self) -> usize {
        let now = Instant::now();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .values()
            .filter(|e| e.banned_until.is_some_and(|u| u > now))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(strikes: u32) -> BanConfig {
        BanConfig {
            enabled: true,
            strikes,
            window_secs: 60,
            base_secs: 10,
            max_secs: 25,
            allow: vec!["10.0.0.0/8".into()],
        }
    }

    #[test]
    fn blocks_match_their_prefix() {
        let block = IpBlock::parse("10.0.0.0/8").unwrap();
        assert!(block.contains("10.9.8.7".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!block.contains("11.0.0.1".parse().unwrap()));
        assert!(IpBlock::parse("::/0")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        assert!(IpBlock::parse("1.2.3.4/33").is_none());
        assert!(IpBlock::parse("nonsense").is_none());
    }

    #[test]
    fn an_ipv6_client_is_its_subnet() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(client(ip("2001:db8:1:2:3:4:5:6"), 48), ip("2001:db8:1::"));
        assert_eq!(
            client(ip("2001:db8:1:2:3:4:5:6"), 128),
            ip("2001:db8:1:2:3:4:5:6")
        );
        assert_eq!(client(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(client(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        // A ban holds for the whole subnet, not beyond it.
        let bans = Bans::new(&config(1), 100, 64);
        assert!(matches!(
            bans.strike(ip("2001:db8:1:2::1")),
            Strike::Banned(_)
        ));
        assert!(bans.banned_for(ip("2001:db8:1:2:ffff::9")).is_some());
        assert!(bans.banned_for(ip("2001:db8:1:3::1")).is_none());
        let each = Bans::new(&config(1), 100, 128);
        each.strike(ip("2001:db8:1:2::1"));
        assert!(each.banned_for(ip("2001:db8:1:2::2")).is_none());
        // An allowed address is not banned with its subnet.
        let allowing = Bans::new(
            &BanConfig {
                allow: vec!["2001:db8:1:2::7".into()],
                ..config(1)
            },
            100,
            64,
        );
        allowing.strike(ip("2001:db8:1:2::1"));
        assert!(allowing.banned_for(ip("2001:db8:1:2::1")).is_some());
        assert!(allowing.banned_for(ip("2001:db8:1:2::7")).is_none());
    }

    #[test]
    fn bans_escalate_up_to_the_maximum() {
        let bans = Bans::new(&config(2), 100, 64);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(bans.strike(ip), Strike::Counted);
        assert_eq!(bans.strike(ip), Strike::Banned(Duration::from_secs(10)));
        assert!(bans.banned_for(ip).is_some());
        assert_eq!(bans.active(), 1);
        // While banned, strikes do not extend the ban; once it ends the next ban is longer.
        bans.state
            .lock()
            .unwrap()
            .get_mut(&ip)
            .unwrap()
            .banned_until = Some(Instant::now());
        bans.strike(ip);
        assert_eq!(bans.strike(ip), Strike::Banned(Duration::from_secs(20)));
        bans.state
            .lock()
            .unwrap()
            .get_mut(&ip)
            .unwrap()
            .banned_until = Some(Instant::now());
        bans.strike(ip);
        assert_eq!(bans.strike(ip), Strike::Banned(Duration::from_secs(25)));
    }

    #[test]
    fn a_table_full_of_bans_stays_bounded_and_keeps_the_longest() {
        let bans = Bans::new(&config(1), 16, 64);
        let ip = |i: u32| IpAddr::from([192, 0, (i >> 8) as u8, i as u8]);
        for i in 0..200 {
            assert!(matches!(bans.strike(ip(i)), Strike::Banned(_)));
        }
        assert!(bans.state.lock().unwrap().len() <= 16);
        // The newest bans are still in force.
        assert!(bans.banned_for(ip(199)).is_some());
        assert!(bans.banned_for(ip(0)).is_none());
    }

    #[test]
    fn the_allow_list_is_never_banned() {
        let bans = Bans::new(&config(1), 100, 64);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(bans.strike(ip), Strike::Counted);
        }
        assert!(bans.banned_for(ip).is_none());
    }
}

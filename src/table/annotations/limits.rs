//! ingress-nginx's rate limits: `limit-rps`, `limit-rpm`, `limit-connections`,
//! `limit-burst-multiplier`, `limit-whitelist`, per client address and per Ingress.
//!
//! Data flow: [`read`](super::read) fills an [`IngressLimits`]; the build turns it into one
//! [`RateLimits`] per Ingress, shared by its routes and carried over from the previous table
//! while its settings stay the same (so a table swap, which endpoint changes cause often,
//! never resets a client's budget). The proxy calls [`RateLimits::admit`] in `admit`, after
//! the redirects and before the source ranges (nginx's preaccess phase comes before its
//! access phase); a refusal is a 429 through `decide()`.
//!
//! The counters are governor's GCRA, which is nginx's `limit_req … nodelay` leaky bucket:
//! `burst` requests at once, then one per `1/rate`. Concurrency is a count per address,
//! dropped when it returns to zero, so idle clients cost nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;

/// `limit-rps`: requests per second from one address.
pub const LIMIT_RPS: &str = "limit-rps";
/// `limit-rpm`: requests per minute from one address.
pub const LIMIT_RPM: &str = "limit-rpm";
/// `limit-connections`: concurrent requests from one address.
pub const LIMIT_CONNECTIONS: &str = "limit-connections";
/// `limit-burst-multiplier`: the burst, as a multiple of the rate (default 5).
pub const LIMIT_BURST_MULTIPLIER: &str = "limit-burst-multiplier";
/// `limit-whitelist`: addresses no limit applies to.
pub const LIMIT_WHITELIST: &str = "limit-whitelist";

/// The annotations this module reads.
pub const READ: [&str; 5] =
    [LIMIT_RPS, LIMIT_RPM, LIMIT_CONNECTIONS, LIMIT_BURST_MULTIPLIER, LIMIT_WHITELIST];

/// ingress-nginx's default `limit-burst-multiplier`.
pub const DEFAULT_BURST_MULTIPLIER: u32 = 5;

/// What one Ingress says about rate limits, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressLimits {
    /// `limit-rps`.
    pub rps: Option<NonZeroU32>,
    /// `limit-rpm`.
    pub rpm: Option<NonZeroU32>,
    /// `limit-connections`.
    pub connections: Option<NonZeroU32>,
    /// `limit-burst-multiplier`.
    pub burst_multiplier: Option<NonZeroU32>,
    /// `limit-whitelist`.
    pub exempt: Vec<ipnet::IpNet>,
}

impl IngressLimits {
    /// Reads `name` (without the prefix) if it is one of [`READ`]; `false` if it is not.
    pub fn read(&mut self, name: &str, key: &str, value: &str, report: &mut impl FnMut(String)) -> bool {
        let v = value.trim();
        let count = |report: &mut dyn FnMut(String)| match v.parse::<u32>() {
            // 0 is ingress-nginx's "no limit".
            Ok(n) => NonZeroU32::new(n),
            Err(_) => {
                report(format!("annotation {key}: {v:?} is not a whole number; no limit applies"));
                None
            }
        };
        match name {
            LIMIT_RPS => self.rps = count(report),
            LIMIT_RPM => self.rpm = count(report),
            LIMIT_CONNECTIONS => self.connections = count(report),
            LIMIT_BURST_MULTIPLIER => self.burst_multiplier = count(report),
            LIMIT_WHITELIST => match super::parse_ranges(v) {
                Ok(ranges) => self.exempt = ranges,
                Err(why) => report(format!("annotation {key}: {why}; no address is exempt")),
            },
            _ => return false,
        }
        true
    }

    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.rps.is_some() || self.rpm.is_some() || self.connections.is_some()
    }
}

type Keyed = governor::RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// One Ingress's limits and their per-address state.
#[derive(Debug)]
pub struct RateLimits {
    /// The settings this state was made for (a changed setting starts afresh).
    pub settings: IngressLimits,
    rpm: Option<Keyed>,
    rps: Option<Keyed>,
    connections: Option<(u32, Mutex<HashMap<IpAddr, u32>>)>,
    clock: DefaultClock,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limit-connections`.
    Connections,
    /// `limit-rpm` or `limit-rps`: a request is allowed again after this long.
    Rate(Duration),
}

/// A request counted by `limit-connections` until it is dropped.
#[derive(Debug)]
pub struct Admitted<'a> {
    held: Option<(&'a Mutex<HashMap<IpAddr, u32>>, IpAddr)>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some((counts, ip)) = self.held.take() {
            let mut counts = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = counts.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

impl RateLimits {
    /// Fresh state for `settings` (`None` when they set no limit).
    pub fn new(settings: &IngressLimits) -> Option<Self> {
        if !settings.any() {
            return None;
        }
        let multiplier = settings.burst_multiplier.map_or(DEFAULT_BURST_MULTIPLIER, NonZeroU32::get);
        // nginx lets `burst` requests wait beyond the first: burst + 1 at once (nodelay).
        let burst = |rate: NonZeroU32| {
            NonZeroU32::new(rate.get().saturating_mul(multiplier).saturating_add(1)).unwrap_or(rate)
        };
        Some(Self {
            settings: settings.clone(),
            rpm: settings.rpm.map(|r| Keyed::keyed(governor::Quota::per_minute(r).allow_burst(burst(r)))),
            rps: settings.rps.map(|r| Keyed::keyed(governor::Quota::per_second(r).allow_burst(burst(r)))),
            connections: settings.connections.map(|n| (n.get(), Mutex::new(HashMap::new()))),
            clock: DefaultClock::default(),
        })
    }

    /// Admits a request from `ip` or says why not, in ingress-nginx's order
    /// (`limit-connections`, `limit-rpm`, `limit-rps`). A refused request uses no budget of
    /// the limits after the one that refused it.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted<'_>, Refused> {
        if self.settings.exempt.iter().any(|n| n.contains(&ip)) {
            return Ok(Admitted { held: None });
        }
        let held = match &self.connections {
            Some((most, counts)) => {
                let mut map = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = map.entry(ip).or_insert(0);
                if *n >= *most {
                    return Err(Refused::Connections);
                }
                *n += 1;
                Some((counts, ip))
            }
            None => None,
        };
        // Dropped on refusal below: the request is not running.
        let admitted = Admitted { held };
        for limiter in [&self.rpm, &self.rps].into_iter().flatten() {
            if let Err(not_until) = limiter.check_key(&ip) {
                return Err(Refused::Rate(not_until.wait_time_from(self.clock.now())));
            }
        }
        Ok(admitted)
    }

    /// Forgets addresses whose budget is full again (their state says nothing new): bounds
    /// the memory to the clients of the last burst window. Called periodically.
    pub fn forget_idle(&self) {
        for limiter in [&self.rpm, &self.rps].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Addresses with state.
    pub fn tracked(&self) -> usize {
        [&self.rpm, &self.rps].into_iter().flatten().map(|l| l.len()).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rps: u32, burst: u32) -> RateLimits {
        let settings = IngressLimits {
            rps: NonZeroU32::new(rps),
            burst_multiplier: NonZeroU32::new(burst),
            ..IngressLimits::default()
        };
        RateLimits::new(&settings).unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limits(1, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.admit(ip).is_ok(), "rate 1 with multiplier 2: 3 at once");
        }
        match l.admit(ip) {
            Err(Refused::Rate(wait)) => {
                assert!(wait <= Duration::from_secs(1) && !wait.is_zero(), "{wait:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(l.admit("10.0.0.2".parse().unwrap()).is_ok(), "per address");
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn connections_are_counted_while_held_and_exempt_addresses_pass() {
        let settings = IngressLimits {
            connections: NonZeroU32::new(1),
            exempt: vec!["10.1.0.0/16".parse().unwrap()],
            ..IngressLimits::default()
        };
        let l = RateLimits::new(&settings).unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = l.admit(ip).unwrap();
        assert_eq!(l.admit(ip).unwrap_err(), Refused::Connections);
        drop(first);
        assert!(l.admit(ip).is_ok());
        let exempt: IpAddr = "10.1.2.3".parse().unwrap();
        let _a = l.admit(exempt).unwrap();
        let _b = l.admit(exempt).unwrap();
        assert!(RateLimits::new(&IngressLimits::default()).is_none());
    }

    #[test]
    fn bad_values_are_reported_and_zero_is_no_limit() {
        let mut l = IngressLimits::default();
        let mut reports = Vec::new();
        assert!(l.read(LIMIT_RPS, "k", "ten", &mut |m| reports.push(m)));
        assert!(l.read(LIMIT_RPM, "k", "0", &mut |m| reports.push(m)));
        assert!(l.read(LIMIT_WHITELIST, "k", "10.0.0.0/33", &mut |m| reports.push(m)));
        assert!(!l.read("limit-rate", "k", "1", &mut |m| reports.push(m)));
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(!l.any());
    }
}

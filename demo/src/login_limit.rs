//! Bounds on failed logins, against password guessing: per client address and per user name,
//! each counted in a fixed window that starts at the first failure. Kept in this process's
//! memory, for a bounded number of addresses and names, so a flood of made-up names costs a
//! fixed amount of memory. Several demo processes behind one balancer count separately.

use std::collections::hash_map::RandomState;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashlink::LinkedHashMap;

/// How many failures are allowed, over what time, for how many keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// Failed logins per user name in one window.
    pub failures_per_name: u32,
    /// Failed logins per client address in one window. Higher than per name: one address
    /// (an office behind one NAT) may hold several people mistyping, and it still stops one
    /// client from trying a few passwords on each of many names.
    pub failures_per_address: u32,
    /// How long a window lasts, from its first failure.
    pub window: Duration,
    /// Addresses and names tracked at most; past it the oldest window is forgotten.
    pub max_tracked: usize,
}

impl Policy {
    /// The demo's: 5 failures per name and 20 per address in 15 minutes.
    pub(crate) const DEFAULT: Policy = Policy {
        failures_per_name: 5,
        failures_per_address: 20,
        window: Duration::from_secs(15 * 60),
        max_tracked: 10_000,
    };
}

/// The bytes of a user name that key its counter: longer names share one (which is only
/// stricter), and a megabyte-long name takes no more memory than this.
const MAX_NAME_KEY_BYTES: usize = 256;

/// What failures are counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// An IPv4 address, or the /64 network of an IPv6 one (a single host is often given a whole
    /// /64, so counting its addresses one by one would not limit it).
    Address(IpAddr),
    /// A user name, as typed (its first [`MAX_NAME_KEY_BYTES`] bytes).
    Name(Box<str>),
}

impl Key {
    fn address(address: IpAddr) -> Key {
        match address {
            IpAddr::V4(_) => Key::Address(address),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::Address(IpAddr::V4(v4)),
                None => Key::Address(IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into())),
            },
        }
    }

    fn name(name: &str) -> Key {
        let mut end = name.len().min(MAX_NAME_KEY_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Key::Name(name[..end].into())
    }
}

/// The failures of one key in its current window.
#[derive(Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The failed-login counters, shared by every request.
#[derive(Debug)]
pub(crate) struct LoginLimiter {
    policy: Policy,
    /// Oldest window first (a key whose window restarts moves to the back), so pruning and
    /// eviction take from the front. SipHash with a random key: the names are the client's.
    windows: Mutex<LinkedHashMap<Key, Window, RandomState>>,
}

impl LoginLimiter {
    pub(crate) fn new(policy: Policy) -> LoginLimiter {
        LoginLimiter {
            policy,
            windows: Mutex::new(LinkedHashMap::with_hasher(RandomState::new())),
        }
    }

    /// `Err(retry_after)` when the address or the name has used up its failures: the login must
    /// be refused without checking the password.
    pub(crate) fn check(&self, address: IpAddr, name: &str, now: Instant) -> Result<(), Duration> {
        let mut windows = self.lock();
        self.forget_expired(&mut windows, now);
        let blocked_for = |key: &Key, limit: u32| {
            windows
                .get(key)
                .filter(|window| window.failures >= limit)
                .map(|window| self.policy.window.saturating_sub(now - window.started))
        };
        let by_address = blocked_for(&Key::address(address), self.policy.failures_per_address);
        let by_name = blocked_for(&Key::name(name), self.policy.failures_per_name);
        match by_address.max(by_name) {
            Some(retry_after) => Err(retry_after),
            None => Ok(()),
        }
    }

    /// Counts a failed login against the address and the name.
    pub(crate) fn record_failure(&self, address: IpAddr, name: &str, now: Instant) {
        let mut windows = self.lock();
        self.forget_expired(&mut windows, now);
        for (key, limit) in [
            (Key::address(address), self.policy.failures_per_address),
            (Key::name(name), self.policy.failures_per_name),
        ] {
            let failures = match windows.get_mut(&key) {
                Some(window) => {
                    window.failures += 1;
                    window.failures
                }
                None => {
                    windows.insert(
                        key.clone(),
                        Window {
                            started: now,
                            failures: 1,
                        },
                    );
                    1
                }
            };
            if failures == limit {
                // The address is the operator's to know; the name could be a mistyped password.
                match key {
                    Key::Address(address) => tracing::warn!(
                        "{limit} failed logins from {address}: its logins are refused for the rest of the window"
                    ),
                    Key::Name(_) => tracing::warn!(
                        "{limit} failed logins for one user name: its logins are refused for the rest of the window"
                    ),
                }
            }
        }
        while windows.len() > self.policy.max_tracked {
            windows.pop_front();
        }
    }

    /// A successful login: the name's failures are forgotten (the address's are not, so
    /// logging in to one's own account does not reset a guessing budget for others).
    pub(crate) fn record_success(&self, name: &str) {
        self.lock().remove(&Key::name(name));
    }

    fn forget_expired(&self, windows: &mut LinkedHashMap<Key, Window, RandomState>, now: Instant) {
        while windows
            .front()
            .is_some_and(|(_, window)| now - window.started >= self.policy.window)
        {
            windows.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkedHashMap<Key, Window, RandomState>> {
        // The map is consistent after every statement: a panic elsewhere cannot break it.
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const AWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(Policy::DEFAULT)
    }

    fn fail(limiter: &LoginLimiter, address: IpAddr, name: &str, times: u32, now: Instant) {
        for _ in 0..times {
            assert_eq!(limiter.check(address, name, now), Ok(()));
            limiter.record_failure(address, name, now);
        }
    }

    #[test]
    fn a_name_is_blocked_after_its_failures_for_the_rest_of_the_window() {
        let limiter = limiter();
        let start = Instant::now();
        fail(&limiter, HOME, "ann", 5, start);
        let later = start + Duration::from_secs(60);
        assert_eq!(
            limiter.check(AWAY, "ann", later),
            Err(Duration::from_secs(14 * 60)),
            "from any address"
        );
        assert_eq!(limiter.check(HOME, "bob", later), Ok(()), "other names");
        let over = start + Policy::DEFAULT.window;
        assert_eq!(limiter.check(HOME, "ann", over), Ok(()), "a new window");
    }

    #[test]
    fn an_address_is_blocked_after_its_failures_whatever_the_name() {
        let limiter = limiter();
        let now = Instant::now();
        for name in ["a", "b", "c", "d"] {
            fail(&limiter, HOME, name, 5, now);
        }
        assert!(limiter.check(HOME, "fresh name", now).is_err());
        assert_eq!(limiter.check(AWAY, "fresh name", now), Ok(()));
    }

    #[test]
    fn a_success_resets_the_name_but_not_the_address() {
        let limiter = limiter();
        let now = Instant::now();
        fail(&limiter, HOME, "ann", 4, now);
        limiter.record_success("ann");
        fail(&limiter, HOME, "ann", 4, now);
        assert_eq!(
            limiter.check(HOME, "ann", now),
            Ok(()),
            "4 since the success"
        );
        for name in ["b", "c", "d"] {
            fail(&limiter, HOME, name, 4, now);
        }
        assert!(
            limiter.check(HOME, "e", now).is_err(),
            "20 from the address"
        );
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_network() {
        let limiter = limiter();
        let now = Instant::now();
        for host in 1..=20u16 {
            let address = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, host));
            fail(&limiter, address, &format!("name {host}"), 1, now);
        }
        let neighbour = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 9, 9, 9, 9));
        assert!(limiter.check(neighbour, "x", now).is_err());
        let other_net = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert_eq!(limiter.check(other_net, "x", now), Ok(()));
    }

    #[test]
    fn tracked_keys_are_bounded_and_the_oldest_go_first() {
        let limiter = LoginLimiter::new(Policy {
            max_tracked: 10,
            failures_per_name: 1,
            ..Policy::DEFAULT
        });
        let start = Instant::now();
        fail(&limiter, HOME, "first", 1, start);
        assert!(limiter.check(AWAY, "first", start).is_err());
        for n in 0..20u32 {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            fail(
                &limiter,
                address,
                &n.to_string(),
                1,
                start + Duration::from_secs(1),
            );
        }
        assert!(limiter.lock().len() <= 10);
        assert_eq!(limiter.check(AWAY, "first", start), Ok(()), "forgotten");
        assert!(limiter.check(AWAY, "19", start).is_err(), "the newest kept");
    }

    #[test]
    fn long_names_are_keyed_by_their_start() {
        let long = "é".repeat(1000);
        let Key::Name(key) = Key::name(&long) else {
            unreachable!()
        };
        assert!(key.len() <= MAX_NAME_KEY_BYTES && long.starts_with(&*key));
    }
}

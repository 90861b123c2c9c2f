//! Sign-in throttling: failed sign-ins are counted per account name and per
//! source address; past a few, each next try must wait, twice as long each
//! time (1 s, 2 s, 4 s… up to 15 minutes). Memory is bounded: a name or an
//! address is forgotten once it has been quiet for the longest wait, and
//! when the table is full the quietest goes first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before the back-off starts: per account, per source.
const FREE_PER_ACCOUNT: u32 = 3;
const FREE_PER_SOURCE: u32 = 10;
/// The longest wait; also how long a quiet name or address is remembered.
const LONGEST: Duration = Duration::from_secs(15 * 60);
/// Names and addresses remembered at most.
const REMEMBERED: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Source(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No try before this.
    until: Instant,
}

/// The sign-in throttle.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<Key, Failures>>,
}

impl Throttle {
    /// Takes a try of `account` from `source`, counted as a failure until
    /// it succeeds ([`Throttle::succeeded`]): so that tries sent at once
    /// are all counted before any password is checked. `Err` with the wait
    /// when it must wait first.
    pub fn attempt(&self, account: &str, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let source = crate::serving::network_of(source);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let wait = [Key::Account(account.to_owned()), Key::Source(source)]
            .iter()
            .filter_map(|key| failures.get(key))
            .map(|f| f.until.saturating_duration_since(now))
            .filter(|wait| !wait.is_zero())
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        charge(&mut failures, account, source, now);
        Ok(())
    }
}

/// Counts a failure of `account` from `source`, keeping the table bounded.
fn charge(failures: &mut HashMap<Key, Failures>, account: &str, source: IpAddr, now: Instant) {
    if failures.len() + 2 > REMEMBERED {
        failures.retain(|_, f| now.saturating_duration_since(f.last) < LONGEST);
    }
    while failures.len() + 2 > REMEMBERED {
        let quietest = failures
            .iter()
            .min_by_key(|(_, f)| f.last)
            .map(|(k, _)| k.clone());
        match quietest {
            Some(key) => failures.remove(&key),
            None => break,
        };
    }
    for (key, free) in [
        (Key::Account(account.to_owned()), FREE_PER_ACCOUNT),
        (Key::Source(source), FREE_PER_SOURCE),
    ] {
        let entry = failures.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            until: now,
        });
        // Quiet for the longest wait: counted afresh.
        if now.saturating_duration_since(entry.last) >= LONGEST {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = now;
        entry.until = now + back_off(entry.count, free);
    }
}

impl Throttle {
    /// Notes that a try of `account` from `source` succeeded: the account
    /// starts afresh, and the source's count loses the try.
    pub fn succeeded(&self, account: &str, source: IpAddr) {
        let source = crate::serving::network_of(source);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&Key::Account(account.to_owned()));
        if let Some(entry) = failures.get_mut(&Key::Source(source)) {
            entry.count = entry.count.saturating_sub(1);
            entry.until = entry.last + back_off(entry.count, FREE_PER_SOURCE);
        }
    }

    /// How many names and addresses are remembered.
    pub fn remembered(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// The wait after the `count`th failure when `free` are allowed.
fn back_off(count: u32, free: u32) -> Duration {
    match count.checked_sub(free) {
        None | Some(0) => Duration::ZERO,
        Some(over) => Duration::from_secs(1u64 << (over - 1).min(20)).min(LONGEST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_past_the_free_ones_doubles_the_wait() {
        assert_eq!(back_off(3, 3), Duration::ZERO);
        assert_eq!(back_off(4, 3), Duration::from_secs(1));
        assert_eq!(back_off(5, 3), Duration::from_secs(2));
        assert_eq!(back_off(8, 3), Duration::from_secs(16));
        assert_eq!(back_off(40, 3), LONGEST);
    }

    #[test]
    fn an_account_is_held_back_from_every_source_and_a_success_frees_it() {
        let throttle = Throttle::default();
        let now = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        for _ in 0..4 {
            assert_eq!(throttle.attempt("admin", a, now), Ok(()));
        }
        assert_eq!(
            throttle.attempt("admin", b, now),
            Err(Duration::from_secs(1))
        );
        assert_eq!(throttle.attempt("other", b, now), Ok(()));
        let later = now + Duration::from_secs(1);
        assert_eq!(throttle.attempt("admin", b, later), Ok(()));
        throttle.succeeded("admin", b);
        assert_eq!(throttle.attempt("admin", b, later), Ok(()));
    }

    #[test]
    fn one_source_trying_many_names_is_held_back() {
        let throttle = Throttle::default();
        let now = Instant::now();
        let source: IpAddr = [192, 0, 2, 9].into();
        for n in 0..11 {
            assert_eq!(throttle.attempt(&format!("name-{n}"), source, now), Ok(()));
        }
        assert_eq!(
            throttle.attempt("fresh", source, now),
            Err(Duration::from_secs(1))
        );
    }

    #[test]
    fn tries_sent_at_once_are_counted_before_any_is_checked() {
        let throttle = Throttle::default();
        let now = Instant::now();
        let source: IpAddr = [192, 0, 2, 3].into();
        let taken = (0..50)
            .filter(|_| throttle.attempt("admin", source, now).is_ok())
            .count();
        assert_eq!(
            taken, 4,
            "the free ones, then the first that waits after it"
        );
        throttle.succeeded("admin", source);
        assert!(throttle.attempt("admin", source, now).is_ok());
    }

    #[test]
    fn one_ipv6_network_is_one_source() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for n in 0..11u16 {
            let address: IpAddr = format!("2001:db8:1:2::{n:x}")
                .parse()
                .unwrap_or([0u8; 4].into());
            assert_eq!(throttle.attempt(&format!("name-{n}"), address, now), Ok(()));
        }
        let another: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap_or([0u8; 4].into());
        assert!(throttle.attempt("fresh", another, now).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for n in 0..(REMEMBERED as u32) {
            let source = IpAddr::from((n + 1).to_be_bytes());
            let _ = throttle.attempt(
                &format!("name-{n}"),
                source,
                now + Duration::from_millis(u64::from(n)),
            );
        }
        assert!(
            throttle.remembered() <= REMEMBERED,
            "{}",
            throttle.remembered()
        );
    }
}

//! Persistence (`ipvsadm -p`): a client address, masked to a network, keeps going to the
//! server it was sent to while that server can take it, for `timeout` after its last
//! connection began or ended. Shared by every worker, since the kernel spreads one client's
//! connections over all of them: sharded so that workers rarely meet on one lock, and each
//! lock is held for one map operation. Time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::backend::Backend;
use crate::sync::lock;

const SHARDS: usize = 16;

/// A shard is swept of expired bindings when it grows to this size, then whenever it doubles
/// from what the sweep left: clients that never come back cost amortised O(1) per bind and
/// never pile up.
const FIRST_SWEEP: usize = 1024;

#[derive(Debug)]
struct Shard {
    bindings: HashMap<IpAddr, Entry>,
    sweep_at: usize,
}

impl Shard {
    fn sweep(&mut self, now: Instant) {
        self.bindings.retain(|_, e| e.expires > now);
        self.sweep_at = (self.bindings.len() * 2).max(FIRST_SWEEP);
    }
}

#[derive(Debug)]
struct Entry {
    server: Arc<Backend>,
    expires: Instant,
}

#[derive(Debug)]
pub struct Persistence {
    timeout: Duration,
    v4_mask: u32,
    v6_prefix: u8,
    shards: Vec<Mutex<Shard>>,
}

impl Persistence {
    /// `v4_mask` is a netmask as ipvsadm's `-M` (255.255.255.255 = per address).
    pub fn new(timeout: Duration, v4_mask: u32, v6_prefix: u8) -> Persistence {
        Persistence {
            timeout,
            v4_mask,
            v6_prefix: v6_prefix.min(128),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        bindings: HashMap::new(),
                        sweep_at: FIRST_SWEEP,
                    })
                })
                .collect(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => IpAddr::from((u32::from(v4) & self.v4_mask).to_be_bytes()),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = match self.v6_prefix {
                    0 => 0,
                    p => u128::MAX << (128 - u32::from(p)),
                };
                IpAddr::from((bits & mask).to_be_bytes())
            }
        }
    }

    fn shard(&self, key: &IpAddr) -> MutexGuard<'_, Shard> {
        let h = super::hash::client(*key, None);
        lock(&self.shards[(h as usize) % SHARDS])
    }

    /// The server this client is bound to, if the binding is still fresh.
    pub fn lookup(&self, ip: IpAddr, now: Instant) -> Option<Arc<Backend>> {
        let key = self.key(ip);
        let mut shard = self.shard(&key);
        match shard.bindings.get(&key) {
            Some(e) if e.expires > now => Some(e.server.clone()),
            Some(_) => {
                shard.bindings.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Binds (or re-binds) the client to `server` and restarts its timeout.
    pub fn bind(&self, ip: IpAddr, server: &Arc<Backend>, now: Instant) {
        let key = self.key(ip);
        let mut shard = self.shard(&key);
        shard.bindings.insert(
            key,
            Entry {
                server: server.clone(),
                expires: now + self.timeout,
            },
        );
        if shard.bindings.len() >= shard.sweep_at {
            shard.sweep(now);
        }
    }

    /// Restarts the timeout of a binding that still points at `server` (a connection ended).
    pub fn touch(&self, ip: IpAddr, server: &Arc<Backend>, now: Instant) {
        let key = self.key(ip);
        if let Some(e) = self.shard(&key).bindings.get_mut(&key)
            && Arc::ptr_eq(&e.server, server)
        {
            e.expires = now + self.timeout;
        }
    }

    /// Drops expired bindings; returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut s = lock(s);
                s.sweep(now);
                s.bindings.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::backend::test_server;

    #[test]
    fn a_client_network_is_bound_until_the_timeout() {
        let p = Persistence::new(Duration::from_secs(300), 0xFFFF_FF00, 128);
        let t0 = Instant::now();
        let a = test_server("a", 1);
        p.bind("10.0.0.7".parse().expect("ip"), &a, t0);
        let same_net = p.lookup(
            "10.0.0.99".parse().expect("ip"),
            t0 + Duration::from_secs(299),
        );
        assert!(same_net.is_some_and(|s| Arc::ptr_eq(&s, &a)));
        assert!(p.lookup("10.0.1.7".parse().expect("ip"), t0).is_none());
        p.touch(
            "10.0.0.7".parse().expect("ip"),
            &a,
            t0 + Duration::from_secs(200),
        );
        assert!(
            p.lookup(
                "10.0.0.7".parse().expect("ip"),
                t0 + Duration::from_secs(450)
            )
            .is_some()
        );
        assert!(
            p.lookup(
                "10.0.0.7".parse().expect("ip"),
                t0 + Duration::from_secs(501)
            )
            .is_none()
        );
        assert_eq!(p.sweep(t0 + Duration::from_secs(600)), 0);
    }

    #[test]
    fn bindings_of_clients_that_never_return_do_not_pile_up() {
        let p = Persistence::new(Duration::from_secs(10), u32::MAX, 128);
        let a = test_server("a", 1);
        let t0 = Instant::now();
        let client = |n: u32| IpAddr::from(n.to_be_bytes());
        for n in 0..20_000 {
            p.bind(client(n), &a, t0);
        }
        // The first crowd has long expired when a second, different one arrives.
        let later = t0 + Duration::from_secs(60);
        for n in 20_000..40_000 {
            p.bind(client(n), &a, later);
        }
        let held: usize = p.shards.iter().map(|s| lock(s).bindings.len()).sum();
        assert!(
            held < 30_000,
            "{held} bindings held; the expired ones were never dropped"
        );
    }

    #[test]
    fn ipv6_clients_are_masked_by_prefix() {
        let p = Persistence::new(Duration::from_secs(10), u32::MAX, 64);
        let t0 = Instant::now();
        let a = test_server("a", 1);
        p.bind("2001:db8::1".parse().expect("ip"), &a, t0);
        assert!(
            p.lookup("2001:db8::ffff".parse().expect("ip"), t0)
                .is_some()
        );
        assert!(p.lookup("2001:db9::1".parse().expect("ip"), t0).is_none());
    }
}

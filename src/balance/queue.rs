//! A pool's queue (HAProxy's backend queue): when every usable server is at its `max_conns`,
//! a request waits here for a slot instead of being refused, up to the queue timeout. A
//! finished request (its `ConnGuard` dropped) wakes one waiter, which then picks again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;

use super::backend::ConnGuard;

#[derive(Debug, Default)]
pub struct Queue {
    /// Requests waiting now.
    waiting: AtomicU64,
    freed: Notify,
    /// Requests that waited the whole queue timeout and were refused.
    pub timeouts: AtomicU64,
    /// Requests that had to wait at all.
    pub queued: AtomicU64,
}

/// What one try at a slot found.
pub enum Pick {
    /// A server with room; its guard holds the slot.
    Slot(ConnGuard),
    /// Servers are usable but every one is full.
    Full,
    /// No server can take the request at all.
    Nothing,
}

/// How waiting for a slot ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    Nothing,
    TimedOut,
}

impl Queue {
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Relaxed)
    }

    /// A slot came free in the pool: one waiter may take it.
    pub fn slot_freed(&self) {
        if self.waiting.load(Relaxed) > 0 {
            self.freed.notify_one();
        }
    }

    /// A slot from `try_pick`, waiting up to `timeout` while every server is full.
    pub async fn acquire(
        self: &Arc<Self>,
        timeout: Duration,
        mut try_pick: impl FnMut() -> Pick,
    ) -> Result<ConnGuard, NoSlot> {
        match try_pick() {
            Pick::Slot(g) => return Ok(g.released_to(self)),
            Pick::Nothing => return Err(NoSlot::Nothing),
            Pick::Full if timeout.is_zero() => {
                self.timeouts.fetch_add(1, Relaxed);
                return Err(NoSlot::TimedOut);
            }
            Pick::Full => {}
        }
        self.queued.fetch_add(1, Relaxed);
        let _in_line = InLine::enter(self);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking again, so a slot freed in between still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match try_pick() {
                Pick::Slot(g) => return Ok(g.released_to(self)),
                Pick::Nothing => return Err(NoSlot::Nothing),
                Pick::Full => {}
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    self.timeouts.fetch_add(1, Relaxed);
                    return Err(NoSlot::TimedOut);
                }
            }
        }
    }
}

/// Counts a request as waiting while it is in line.
struct InLine<'a>(&'a Queue);

impl<'a> InLine<'a> {
    fn enter(q: &'a Queue) -> InLine<'a> {
        q.waiting.fetch_add(1, Relaxed);
        InLine(q)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
        // A waiter that leaves (timed out, or its client went away) may have been the one a
        // freed slot woke: pass the wake-up on.
        self.0.slot_freed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::backend::{Backend, BackendSettings, test_backend, test_settings};

    fn limited(max: u32) -> Arc<Backend> {
        let s = BackendSettings {
            max_conns: max,
            min_conns: max - 1,
            ..test_settings(1)
        };
        test_backend("a", &s)
    }

    fn try_server(b: &Arc<Backend>) -> Pick {
        match b.clone().try_connection() {
            Some(g) => Pick::Slot(g),
            None => Pick::Full,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_gets_the_slot_a_finished_request_frees() {
        let q = Arc::new(Queue::default());
        let b = limited(1);
        let first = q
            .acquire(Duration::from_secs(5), || try_server(&b))
            .await
            .expect("free");
        let (q2, b2) = (q.clone(), b.clone());
        let waiter = tokio::spawn(async move {
            q2.acquire(Duration::from_secs(5), || try_server(&b2))
                .await
                .map(|g| g.backend().name.clone())
        });
        tokio::task::yield_now().await;
        assert_eq!(q.waiting(), 1);
        drop(first);
        assert_eq!(waiter.await.expect("join"), Ok("a".to_string()));
        assert_eq!((q.waiting(), q.queued.load(Relaxed)), (0, 1));
        assert_eq!(b.active_conns(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_is_refused_when_the_queue_timeout_passes() {
        let q = Arc::new(Queue::default());
        let b = limited(1);
        let _held = q
            .acquire(Duration::ZERO, || try_server(&b))
            .await
            .expect("free");
        assert_eq!(
            q.acquire(Duration::ZERO, || try_server(&b)).await.err(),
            Some(NoSlot::TimedOut),
            "no queue: refused at once"
        );
        let started = tokio::time::Instant::now();
        let r = q
            .acquire(Duration::from_millis(300), || try_server(&b))
            .await;
        assert_eq!(r.err(), Some(NoSlot::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(q.timeouts.load(Relaxed), 2);
        assert_eq!(
            q.acquire(Duration::ZERO, || Pick::Nothing).await.err(),
            Some(NoSlot::Nothing)
        );
    }
}

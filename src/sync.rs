//! Locking that survives a panic: a thread that panicked while holding a lock must not take
//! every engine that later reads the same counters or tables down with it. The data behind
//! these locks stays consistent at every step, so a poisoned lock is simply taken.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resolves at `at`, or never without a deadline: a `select!` branch for a timeout that
/// may be off.
pub async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A value many threads read on every request and that changes rarely (a reload): readers
/// keep their own `Arc` and take the lock only after the version moved.
#[derive(Debug)]
pub struct Published<T> {
    value: Mutex<std::sync::Arc<T>>,
    version: std::sync::atomic::AtomicU64,
}

impl<T> Published<T> {
    pub fn new(value: T) -> Published<T> {
        Published {
            value: Mutex::new(std::sync::Arc::new(value)),
            version: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub fn get(&self) -> std::sync::Arc<T> {
        lock(&self.value).clone()
    }

    pub fn publish(&self, value: T) {
        *lock(&self.value) = std::sync::Arc::new(value);
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A reader's handle on a published value: cloning it touches only this thread's count, not
/// the `Arc`'s, which every worker shares (a request takes several, and a shared count
/// bounces between cores on each).
pub type Local<T> = std::rc::Rc<std::sync::Arc<T>>;

/// One reader's copy of a `Published` value.
#[derive(Debug)]
pub struct Follower<T> {
    version: u64,
    value: Local<T>,
}

impl<T> Follower<T> {
    pub fn new(source: &Published<T>) -> Follower<T> {
        Follower {
            version: source.version(),
            value: std::rc::Rc::new(source.get()),
        }
    }

    /// The latest value, and whether it changed since the last call.
    pub fn latest(&mut self, source: &Published<T>) -> (&Local<T>, bool) {
        let v = source.version();
        let changed = v != self.version;
        if changed {
            self.version = v;
            self.value = std::rc::Rc::new(source.get());
        }
        (&self.value, changed)
    }
}

//! Locking that survives a panic: a thread that panicked while holding a lock must not take
//! every engine that later reads the same counters or tables down with it. The data behind
//! these locks stays consistent at every step, so a poisoned lock is simply taken.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

//! Load balancing shared by the L4 and L7 roles: real servers and their counters
//! (`backend`), the schedulers (`select`, `maglev`, `hash`), health (`health` state machine,
//! `probe` checks, `checker` task), persistence (`persist`) and pools (`pool`) that put them
//! together. `l4` is the TCP proxy on top; `l7` holds the HTTP proxy's routing, header
//! rewriting and request hashing.

pub mod actions;
pub mod backend;
pub mod checker;
pub mod hash;
pub mod health;
pub mod http_stats;
pub mod l4;
pub mod l7;
pub mod maglev;
pub mod passive;
pub mod persist;
pub mod pool;
pub mod probe;
pub mod queue;
pub mod select;
pub mod workers;

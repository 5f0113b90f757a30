//! The memcached-compatible cache engine: protocol parsing (`protocol`, `meta`, `cnum`), the
//! store (`store`), request execution (`exec`), counters (`stats`, `stats_reply`) and the
//! network shell (`server`). Everything but `server` is synchronous and testable without
//! sockets.

mod cnum;
pub mod engine;
pub mod exec;
pub mod meta;
pub mod protocol;
pub mod server;
pub mod stats;
mod stats_reply;
pub mod store;
pub mod version;

pub use engine::Engine;

/// What `version` reports: the memcached protocol level, then ours.
pub const VERSION: &str = concat!("1.6.18-opsconsole-", env!("CARGO_PKG_VERSION"));

//! repcached-style replication between two cache nodes, with the faults of repcached fixed:
//! heartbeats, reconnect with a deterministic single master, versioned writes that converge,
//! tombstones, partial resync from a backlog, a bounded send queue, authentication.
//!
//! `wire` (frames and records), `backlog` and `auth` are pure; `shared` is the state the cache
//! engine and the link share; `link` runs one peer connection; `node` owns the role state
//! machine, the listener and the dialer.

pub mod apply;
pub mod auth;
pub mod backlog;
pub mod link;
pub mod replicator;
pub mod shared;
pub mod wire;

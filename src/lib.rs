//! opsconsole: one binary that is a replicated memcached-compatible cache node, an L4 and an
//! L7 balancer, with a live terminal console to watch and steer them.
//!
//! ```text
//!  clients ─▶ cache::server ─▶ cache::exec ─▶ cache::store
//!                  │  atomics / short std Mutex sections
//!                  ▼
//!         Node::snapshot() ──▶ control::Snapshot ──▶ headless status line (console, admin API)
//!         operator action  ──▶ control::Command  ──▶ Node::act()
//! ```
//!
//! `cli` and `config` describe what to run, `node` runs it, `control` is the one surface
//! every face (headless, console, API) uses, `logging` keeps the record, `ctl` steers a
//! running node through its admin API, `manual` prints completions and man pages, and
//! `bench` measures servers (ours or the real memcached) from the outside.

pub mod admin;
pub mod balance;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod fd_limit;
pub mod fuzzing;
pub mod logging;
pub mod manual;
pub mod node;
pub mod replication;
pub mod sync;
pub mod tui;

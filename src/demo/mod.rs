//! The demo's moving parts: a traffic generator for the caches and the balancers, the
//! preload that gives a marugoto copy something to carry, and small HTTP app servers for
//! the balancers to front.

pub mod app_server;
mod traffic;

pub use traffic::{Traffic, preload};

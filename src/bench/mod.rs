//! Load generators that measure a running server from the outside, the way an operator would
//! with redis-benchmark or memtier: they speak only the public wire protocol, so the same run can
//! be pointed at opsconsole or at the peer it replaces.

pub mod cache;

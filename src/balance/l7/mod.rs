//! The L7 role: an HTTP/1.1 reverse proxy (hyper) with nginx-style routing and the
//! balancing HAProxy users expect, over the same pools, schedulers and health checks as L4.

pub mod headers;
pub mod key;
pub mod route;

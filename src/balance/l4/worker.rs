//! A worker's accept loop for one L4 service: each worker keeps its own scheduler state
//! (a `PoolCursor`) per service; only the servers' counters are shared.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::forward;
use super::service::Service;
use crate::balance::pool::PoolCursor;
use crate::balance::workers::Worker;

/// Accepts on `listener` until the service is removed or the node stops.
pub async fn accept(service: Arc<Service>, listener: TcpListener, worker: Worker) {
    let cursor = Rc::new(RefCell::new(PoolCursor::new(&service.pool, worker.seed())));
    let mut warned = false;
    loop {
        let accepted = tokio::select! {
            _ = service.accepting.cancelled() => return,
            _ = worker.stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                warned = false;
                let task = forward::serve(
                    service.clone(),
                    cursor.clone(),
                    stream,
                    peer,
                    worker.stop.clone(),
                );
                tokio::task::spawn_local(worker.conns.track_future(task));
            }
            Err(e) => {
                // Out of file descriptors and the like: say so once, back off, keep going.
                if !warned {
                    tracing::warn!(service = %service.name, "accept failed: {e}");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

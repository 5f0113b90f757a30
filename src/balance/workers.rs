//! The proxy worker threads both balancers run on: one thread per core, each with its own
//! single-threaded runtime, and per listening address one `SO_REUSEPORT` listener per worker,
//! so the kernel spreads connections over them and a connection never changes threads. A
//! balancer hands a worker jobs (start accepting on this listener) that run on the worker's
//! thread, where they may keep `Rc` state and spawn local tasks.

use std::io;
use std::net::SocketAddr;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a job sees of the worker it runs on.
#[derive(Clone)]
pub struct Worker {
    pub index: usize,
    /// Connection tasks, so shutdown can wait for them.
    pub conns: TaskTracker,
    /// Cancelled when open connections must be dropped (the end of the grace period).
    pub stop: CancellationToken,
}

impl Worker {
    /// A per-worker seed for schedulers, so workers do not all start on the same server.
    pub fn seed(&self) -> u64 {
        (self.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Runs on the worker's thread, inside its `LocalSet`.
pub type Job = Box<dyn FnOnce(&Worker) + Send>;

/// A balancer's worker threads and what it needs to stop them: the tokens, the trackers of
/// its connections and checker tasks, and the node's runtime the checkers run on.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    /// Stops accepting and checking: listeners' and checkers' tokens are its children.
    pub cancel: CancellationToken,
    /// Drops open connections (after the shutdown grace period).
    stop: CancellationToken,
    conns: TaskTracker,
    pub checks: TaskTracker,
    pub runtime: tokio::runtime::Handle,
}

impl Workers {
    /// Starts `count` threads named `{role}-worker-N`. They run jobs until shutdown, then
    /// keep their connections going until its grace period ends. Must run inside the node's
    /// runtime.
    pub fn spawn(role: &str, count: usize) -> io::Result<Workers> {
        let cancel = CancellationToken::new();
        let stop = CancellationToken::new();
        let conns = TaskTracker::new();
        let mut senders = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let worker = Worker {
                index,
                conns: conns.clone(),
                stop: stop.clone(),
            };
            let cancel = cancel.clone();
            std::thread::Builder::new()
                .name(format!("{role}-worker-{index}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&runtime, run(worker, rx, cancel));
                })?;
            senders.push(tx);
        }
        Ok(Workers {
            senders,
            cancel,
            stop,
            conns,
            checks: TaskTracker::new(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Stops accepting and checking, gives open connections up to `grace`, then drops them.
    /// Returns false if connections were still open at the end.
    pub async fn shutdown(&self, grace: std::time::Duration) -> bool {
        self.cancel.cancel();
        self.conns.close();
        self.checks.close();
        let finished = tokio::time::timeout(grace, self.conns.wait()).await.is_ok();
        self.stop.cancel();
        finished
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Gives each worker one of `listeners` and the job to serve it.
    pub fn serve<F>(&self, listeners: Vec<std::net::TcpListener>, job: F)
    where
        F: Fn(&Worker, tokio::net::TcpListener) + Clone + Send + 'static,
    {
        for (tx, listener) in self.senders.iter().zip(listeners) {
            let job = job.clone();
            let _ = tx.send(Box::new(
                move |w: &Worker| match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => job(w, l),
                    Err(e) => tracing::error!("worker {} cannot use its listener: {e}", w.index),
                },
            ));
        }
    }
}

async fn run(worker: Worker, mut jobs: mpsc::UnboundedReceiver<Job>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            job = jobs.recv() => match job {
                Some(job) => job(&worker),
                None => break,
            },
        }
    }
    // Open connections finish on their own until the node's grace period ends.
    worker.stop.cancelled().await;
}

/// Whether a listener at `old` must be bound anew for the address `new` (port 0 keeps any
/// port on the same IP).
pub fn moved(old: SocketAddr, new: SocketAddr) -> bool {
    !(old == new || (new.port() == 0 && old.ip() == new.ip()))
}

/// Binds `count` listeners on `addr` with `SO_REUSEPORT` (the first decides the port when
/// `addr` asks for port 0). Errors name `section`, the config section that asked for it.
pub fn bind(
    section: &str,
    addr: SocketAddr,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let explain = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (listen in [{section}]): {e}"),
        )
    };
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut at = addr;
    for _ in 0..count.max(1) {
        let l = reuseport_listener(at).map_err(explain)?;
        at = l.local_addr().map_err(explain)?;
        out.push(l);
    }
    Ok(out)
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

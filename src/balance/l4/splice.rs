//! Zero-copy forwarding on Linux: bytes go socket → pipe → socket inside the kernel with
//! splice(2) and never cross into user space. A bulk transfer then costs two syscalls per
//! pipe-full and no copy, where read/write costs two syscalls and two copies per buffer.
//!
//! Pipes are kept per worker thread and reused, as HAProxy does, since creating one is two
//! descriptors and a syscall: worth it for a long transfer, not for every short connection.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Empty pipes a worker keeps for its next spliced connections (two descriptors each).
const POOLED_PIPES: usize = 64;
/// Asked for per splice; the kernel moves at most what the pipe holds (64 KiB by default).
const SPLICE_CHUNK: usize = 1 << 20;

thread_local! {
    static FREE_PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn open() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` is a valid two-int array for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write })
    }
}

/// A pipe from this thread's pool, with the bytes it holds. It goes back to the pool when
/// dropped empty; one still holding bytes (the connection failed mid-way) is closed.
pub struct PooledPipe {
    pipe: Option<Pipe>,
    held: usize,
}

impl PooledPipe {
    /// A pipe, or an error when none can be opened (out of descriptors): the caller then
    /// copies through user space instead.
    pub fn take() -> io::Result<PooledPipe> {
        let reused = FREE_PIPES.with(|f| f.borrow_mut().pop());
        let pipe = match reused {
            Some(p) => p,
            None => Pipe::open()?,
        };
        Ok(PooledPipe {
            pipe: Some(pipe),
            held: 0,
        })
    }

    fn fds(&self) -> io::Result<(RawFd, RawFd)> {
        match &self.pipe {
            Some(p) => Ok((p.read.as_raw_fd(), p.write.as_raw_fd())),
            None => Err(io::Error::other("pipe already released")),
        }
    }
}

impl Drop for PooledPipe {
    fn drop(&mut self) {
        if self.held > 0 {
            return; // stale bytes must not reach the next connection: close it
        }
        if let Some(p) = self.pipe.take() {
            FREE_PIPES.with(|f| {
                let mut free = f.borrow_mut();
                if free.len() < POOLED_PIPES {
                    free.push(p);
                }
            });
        }
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain descriptors and null offsets (both ends are streams); the kernel
    // checks the descriptors and reports a bad one as an error.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves bytes from `from` to `to` through `pipe` until `from` reaches end of input.
/// Each pipe-full is written out completely before the next is read, so the pipe is empty
/// whenever a read is tried and a would-block there can only mean the socket has no data.
pub async fn carry(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &mut PooledPipe,
    counter: &AtomicU64,
    last: &Cell<tokio::time::Instant>,
) -> io::Result<()> {
    let (pipe_read, pipe_write) = pipe.fds()?;
    let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
    loop {
        from.readable().await?;
        match from.try_io(Interest::READABLE, || {
            splice(from_fd, pipe_write, SPLICE_CHUNK)
        }) {
            Ok(0) => return Ok(()),
            Ok(n) => pipe.held = n,
            Err(e) if retry_later(&e) => continue,
            Err(e) => return Err(e),
        }
        while pipe.held > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || splice(pipe_read, to_fd, pipe.held)) {
                Ok(n) => {
                    pipe.held -= n;
                    counter.fetch_add(n as u64, Relaxed);
                }
                Err(e) if retry_later(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        last.set(tokio::time::Instant::now());
    }
}

fn retry_later(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    #[tokio::test]
    async fn carries_every_byte_in_order_and_returns_the_pipe_empty() {
        let (mut source, relay_in) = pair().await;
        let (relay_out, mut sink) = pair().await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            source.write_all(&sent).await.expect("write");
            source.shutdown().await.expect("shutdown");
        });
        let counter = AtomicU64::new(0);
        let last = Cell::new(tokio::time::Instant::now());
        let mut pipe = PooledPipe::take().expect("pipe");
        let relay = carry(&relay_in, &relay_out, &mut pipe, &counter, &last);
        let mut received = Vec::new();
        let (relayed, read) = tokio::join!(relay, async {
            let mut buf = vec![0u8; 65536];
            while received.len() < data.len() {
                let n = sink.read(&mut buf).await.expect("read");
                assert!(n > 0, "sink saw end of input early");
                received.extend_from_slice(&buf[..n]);
            }
        });
        relayed.expect("relay");
        let () = read;
        writer.await.expect("writer");
        assert_eq!(received, data);
        assert_eq!(counter.load(Relaxed), data.len() as u64);
        assert_eq!(pipe.held, 0);
    }
}

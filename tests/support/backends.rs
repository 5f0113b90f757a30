//! Real servers for the balancer tests: TCP servers that say who they are, echo what they get
//! and pass a half-close on, or report the PROXY header they were sent. Each runs on its own
//! threads over a real loopback socket and can be killed (its port then refuses connects).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::DEADLINE;

/// What a backend does with each connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends `NAME\n`, then echoes until the client's FIN, then closes.
    Echo,
    /// Reads a PROXY header (v1 line or v2 binary), replies `NAME HEX-OF-HEADER\n`, then
    /// echoes as `Echo`.
    ProxyHeader,
    /// Answers an HTTP/1.0 request with `200` and its name as the body.
    Http,
}

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Backend {
    pub fn start(name: &str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        Backend::serve(name, listener, behaviour)
    }

    /// Serves on `addr` (a port it was killed on before).
    pub fn restart_at(name: &str, addr: SocketAddr, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind(addr).expect("rebind backend");
        Backend::serve(name, listener, behaviour)
    }

    fn serve(name: &str, listener: TcpListener, behaviour: Behaviour) -> Backend {
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let b = Backend {
            name: name.to_string(),
            addr,
            accepted: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
        };
        let (stop, accepted, open, name) = (
            b.stop.clone(),
            b.accepted.clone(),
            b.open.clone(),
            b.name.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.set_nonblocking(false);
                        if let Ok(c) = stream.try_clone() {
                            open.lock().expect("open list").push(c);
                        }
                        let name = name.clone();
                        std::thread::spawn(move || handle(stream, &name, behaviour));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        b
    }

    /// Stops listening and cuts every open connection, as a crashed server.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.open.lock().expect("open list").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // The accept thread notices within a few ms; wait until the port refuses.
        super::wait_until("a killed backend to stop listening", || {
            TcpStream::connect(self.addr).is_err()
        });
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(mut stream: TcpStream, name: &str, behaviour: Behaviour) {
    let _ = stream.set_read_timeout(Some(DEADLINE));
    match behaviour {
        Behaviour::Echo => {
            let _ = stream.write_all(format!("{name}\n").as_bytes());
            echo(stream);
        }
        Behaviour::ProxyHeader => {
            let Some(header) = read_proxy_header(&mut stream) else {
                return;
            };
            let hex: String = header.iter().map(|b| format!("{b:02x}")).collect();
            let _ = stream.write_all(format!("{name} {hex}\n").as_bytes());
            echo(stream);
        }
        Behaviour::Http => {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            let _ = stream.write_all(
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                )
                .as_bytes(),
            );
        }
    }
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

fn read_proxy_header(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).ok()?;
    let mut header = first.to_vec();
    if first[0] == b'P' {
        let mut byte = [0u8; 1];
        while !header.ends_with(b"\r\n") && header.len() < 108 {
            stream.read_exact(&mut byte).ok()?;
            header.push(byte[0]);
        }
    } else {
        let mut fixed = [0u8; 15];
        stream.read_exact(&mut fixed).ok()?;
        header.extend_from_slice(&fixed);
        let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
        let mut rest = vec![0u8; len];
        stream.read_exact(&mut rest).ok()?;
        header.extend_from_slice(&rest);
    }
    Some(header)
}

/// One short conversation through a balancer: returns the name of the server that answered,
/// after checking that an echo round trip and the close both work.
pub fn ask(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(DEADLINE))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut name = String::new();
    reader
        .read_line(&mut name)
        .map_err(|e| format!("read greeting: {e}"))?;
    if name.is_empty() {
        return Err("closed before the greeting".into());
    }
    s.write_all(b"ping\n").map_err(|e| format!("write: {e}"))?;
    let mut echo = String::new();
    reader
        .read_line(&mut echo)
        .map_err(|e| format!("read echo: {e}"))?;
    if echo != "ping\n" {
        return Err(format!("echo was {echo:?}"));
    }
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .map_err(|e| format!("read to close: {e}"))?;
    Ok(name.trim_end().to_string())
}

/// A connection held open: the server's name, and the stream for later use.
pub fn hold(addr: SocketAddr) -> (String, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut reader = BufReader::new(s);
    let mut name = String::new();
    reader.read_line(&mut name).expect("greeting");
    (name.trim_end().to_string(), reader)
}

/// An echo round trip on a held connection.
pub fn round_trip(conn: &mut BufReader<TcpStream>, text: &str) -> String {
    conn.get_mut()
        .write_all(format!("{text}\n").as_bytes())
        .expect("write");
    let mut line = String::new();
    conn.read_line(&mut line).expect("read");
    line.trim_end().to_string()
}

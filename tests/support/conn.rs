//! A persistent text-protocol connection that reads replies line by line; test files add
//! the request helpers they need in their own `impl Conn` blocks.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use super::DEADLINE;

pub struct Conn {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let writer = TcpStream::connect(addr).expect("connect");
        writer.set_read_timeout(Some(DEADLINE)).expect("timeout");
        writer.set_nodelay(true).expect("nodelay");
        let reader = BufReader::new(writer.try_clone().expect("clone"));
        Conn { reader, writer }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// One reply line without its CRLF.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read");
        assert!(n > 0, "the server closed the connection");
        assert!(line.ends_with("\r\n"), "unterminated reply line {line:?}");
        line.truncate(line.len() - 2);
        line
    }
}

/// `stats` (or `stats replication` when `detailed`, which also walks every item for the
/// digest) as a map.
pub fn stats(addr: SocketAddr, detailed: bool) -> HashMap<String, String> {
    let mut c = Conn::connect(addr);
    c.send(if detailed {
        b"stats replication\r\n"
    } else {
        b"stats\r\n"
    });
    let mut out = HashMap::new();
    loop {
        let line = c.line();
        if line == "END" {
            return out;
        }
        let mut parts = line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("STAT"), "unexpected stats line {line:?}");
        let name = parts.next().expect("name").to_string();
        out.insert(name, parts.next().unwrap_or("").to_string());
    }
}

/// One stat, from plain `stats` when it is there (cheap), else from `stats replication`.
pub fn stat(addr: SocketAddr, name: &str) -> String {
    stats(addr, false)
        .remove(name)
        .or_else(|| stats(addr, true).remove(name))
        .unwrap_or_else(|| panic!("no stat {name}"))
}

pub fn number(addr: SocketAddr, name: &str) -> u64 {
    let v = stat(addr, name);
    v.parse()
        .unwrap_or_else(|_| panic!("stat {name} is not a number: {v}"))
}

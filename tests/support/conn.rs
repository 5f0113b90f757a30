//! A persistent text-protocol connection that reads replies line by line; test files add
//! the request helpers they need in their own `impl Conn` blocks.

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

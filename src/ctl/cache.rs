//! `ctl get` and `ctl set` speak memcached's text protocol through `Command::CacheRequest`,
//! the key tester's path: the request text built here, the reply read back.

use super::{Exit, Failure};
use crate::cache::protocol::key_ok;

/// A key that would change the request's meaning (a space, a line end) never leaves here.
fn checked(key: &str) -> Result<&str, Failure> {
    if key.is_empty() || !key_ok(key.as_bytes()) {
        return Err(Failure::usage(format!(
            "{key:?} is not a memcached key: 1 to 250 bytes, no spaces or control characters"
        )));
    }
    Ok(key)
}

pub fn get_request(key: &str) -> Result<String, Failure> {
    Ok(format!("get {}\r\n", checked(key)?))
}

/// The value goes as a sized data block, so any text (line ends included) is stored as is.
pub fn set_request(key: &str, value: &str, flags: u32, ttl: i64) -> Result<String, Failure> {
    Ok(format!(
        "set {} {flags} {ttl} {}\r\n{value}\r\n",
        checked(key)?,
        value.len()
    ))
}

/// The value of a one-key `get` reply; exit 1 for no item or a refusal.
pub fn read_get(reply: &str, key: &str, role: &str) -> Result<String, Failure> {
    if reply == "END\r\n" {
        return Err(Failure::new(
            Exit::Refused,
            format!("no item {key:?} on {role}"),
        ));
    }
    if let Some(rest) = reply.strip_prefix("VALUE ")
        && let Some((_header, block)) = rest.split_once("\r\n")
        && let Some(value) = block.strip_suffix("\r\nEND\r\n")
    {
        return Ok(value.to_string());
    }
    Err(refusal(reply))
}

/// `STORED`, or exit 1 with the node's reply (`NOT_STORED`, `SERVER_ERROR ...`).
pub fn read_stored(reply: &str) -> Result<String, Failure> {
    match reply.trim_end() {
        "STORED" => Ok("STORED".into()),
        _ => Err(refusal(reply)),
    }
}

/// An error reply is the node refusing; anything else is not memcached talking.
fn refusal(reply: &str) -> Failure {
    let line = reply.trim_end();
    let refused = [
        "SERVER_ERROR",
        "CLIENT_ERROR",
        "ERROR",
        "NOT_STORED",
        "EXISTS",
    ]
    .iter()
    .any(|p| line.starts_with(p));
    if refused {
        Failure::new(Exit::Refused, format!("refused: {line}"))
    } else {
        Failure::new(
            Exit::Unexpected,
            format!("unexpected cache reply: {line:?}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_memcached_text_and_keys_cannot_inject_commands() {
        assert_eq!(get_request("k").expect("get"), "get k\r\n");
        assert_eq!(
            set_request("k", "two\r\nlines", 7, 60).expect("set"),
            "set k 7 60 10\r\ntwo\r\nlines\r\n"
        );
        for bad in ["", "a b", "k\r\nflush_all", &"k".repeat(251)] {
            let e = get_request(bad).expect_err(bad);
            assert_eq!(e.exit, Exit::Usage);
            assert!(set_request(bad, "v", 0, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn get_replies_give_the_value_or_say_why_not() {
        assert_eq!(
            read_get("VALUE k 0 5\r\nhello\r\nEND\r\n", "k", "master"),
            Ok("hello".into())
        );
        assert_eq!(
            read_get("VALUE k 0 7\r\na\r\nb c\r\nEND\r\n", "k", "master"),
            Ok("a\r\nb c".into()),
            "a value with line ends comes back whole"
        );
        let e = read_get("END\r\n", "k", "master").expect_err("miss");
        assert_eq!(e.exit, Exit::Refused);
        assert!(e.message.contains("\"k\"") && e.message.contains("master"));
        let busy = "SERVER_ERROR replication: marugoto copy in progress, not serving yet\r\n";
        let e = read_get(busy, "k", "slave").expect_err("busy");
        assert_eq!(e.exit, Exit::Refused);
        assert!(e.message.contains("marugoto"), "{}", e.message);
        assert_eq!(
            read_get("HTTP/1.1 200 OK\r\n", "k", "m")
                .expect_err("junk")
                .exit,
            Exit::Unexpected
        );
    }

    #[test]
    fn storage_replies() {
        assert_eq!(read_stored("STORED\r\n"), Ok("STORED".into()));
        let e = read_stored("SERVER_ERROR object too large for cache\r\n").expect_err("big");
        assert_eq!(e.exit, Exit::Refused);
    }
}

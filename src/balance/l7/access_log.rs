//! The access log: one line per request, written when its response has been carried whole
//! (or abandoned), in nginx's `common` or `combined` format or as JSON, to its own rolling
//! file. A background thread writes the file, so a slow disk never stalls a proxy worker; if
//! it falls behind, lines are dropped and counted rather than queued without bound.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hyper::{Method, Version};
use serde::{Deserialize, Serialize};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// `access_log = { ... }` in an `[l7.listeners.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Directory of the file (created if missing).
    pub dir: PathBuf,
    /// File name prefix; the rotation date is appended.
    pub file: String,
    pub format: AccessFormat,
    /// `minutely`, `hourly`, `daily` or `never`.
    pub rotation: String,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            dir: PathBuf::from("log"),
            file: "access.log".into(),
            format: AccessFormat::Combined,
            rotation: "daily".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// `client - - [time] "request line" status bytes`
    Common,
    /// `common` plus `"referer" "user agent"`.
    #[default]
    Combined,
    /// One JSON object per line, with the pool, server, timings and request id too.
    Json,
}

/// An open access log.
pub struct AccessLog {
    pub config: AccessLogConfig,
    writer: NonBlocking,
    /// Flushes what is queued when the log is dropped (a reload replaced it, or the node
    /// stops).
    _flush: WorkerGuard,
}

/// Lines the writer thread may fall behind by before new ones are dropped.
const BACKLOG_LINES: usize = 64 * 1024;

impl AccessLog {
    pub fn open(config: &AccessLogConfig) -> io::Result<AccessLog> {
        let appender = crate::logging::rolling_file(
            "access log",
            &config.dir,
            &config.file,
            &config.rotation,
        )?;
        let (writer, flush) = NonBlockingBuilder::default()
            .buffered_lines_limit(BACKLOG_LINES)
            .thread_name("access-log")
            .finish(appender);
        Ok(AccessLog {
            config: config.clone(),
            writer,
            _flush: flush,
        })
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> usize {
        self.writer.error_counter().dropped_lines()
    }

    pub fn write(&self, entry: &Entry) {
        let mut line = String::with_capacity(256);
        entry.format(self.config.format, &mut line);
        line.push('\n');
        // The writer only queues the line for its thread; an error means it was dropped,
        // which `dropped` counts.
        let _ = self.writer.clone().write_all(line.as_bytes());
    }
}

/// What one request's line says. Filled in as the request goes: the request's side when it
/// arrives, the rest when its response ends.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: SystemTime,
    pub started: Instant,
    pub listener: String,
    pub client: IpAddr,
    pub method: Method,
    pub target: String,
    pub version: Version,
    pub host: Option<String>,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub pool: Option<String>,
    pub server: Option<String>,
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// Request sent to response head received, when a server answered.
    pub upstream_us: Option<u64>,
    /// The response ended before all of its body reached the client.
    pub cut_short: bool,
}

impl Entry {
    fn format(&self, format: AccessFormat, out: &mut String) {
        match format {
            AccessFormat::Common => self.common(out),
            AccessFormat::Combined => {
                self.common(out);
                out.push_str(" \"");
                quoted(out, self.referer.as_deref().unwrap_or("-"));
                out.push_str("\" \"");
                quoted(out, self.user_agent.as_deref().unwrap_or("-"));
                out.push('"');
            }
            AccessFormat::Json => self.json(out),
        }
    }

    /// `127.0.0.1 - - [25/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 612`
    fn common(&self, out: &mut String) {
        let t = Civil::of(self.at);
        let _ = write!(
            out,
            "{} - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"",
            self.client,
            t.day,
            MONTHS[usize::from(t.month - 1)],
            t.year,
            t.hour,
            t.minute,
            t.second
        );
        quoted(out, self.method.as_str());
        out.push(' ');
        quoted(out, &self.target);
        let _ = write!(out, " {:?}\" {} ", self.version, self.status);
        if self.bytes == 0 {
            out.push('-');
        } else {
            let _ = write!(out, "{}", self.bytes);
        }
    }

    fn json(&self, out: &mut String) {
        let t = Civil::of(self.at);
        let _ = write!(
            out,
            "{{\"time\":\"{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"",
            t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
        );
        let strings = [
            ("listener", Some(self.listener.as_str())),
            ("client", None),
            ("method", Some(self.method.as_str())),
            ("uri", Some(self.target.as_str())),
            ("host", self.host.as_deref()),
            ("referer", self.referer.as_deref()),
            ("user_agent", self.user_agent.as_deref()),
            ("request_id", self.request_id.as_deref()),
            ("pool", self.pool.as_deref()),
            ("server", self.server.as_deref()),
        ];
        for (key, value) in strings {
            if key == "client" {
                let _ = write!(out, ",\"client\":\"{}\"", self.client);
                continue;
            }
            let _ = write!(out, ",\"{key}\":");
            match value {
                Some(v) => {
                    out.push('"');
                    json_escaped(out, v);
                    out.push('"');
                }
                None => out.push_str("null"),
            }
        }
        let _ = write!(
            out,
            ",\"protocol\":\"{:?}\",\"status\":{},\"bytes\":{},\"duration_us\":{}",
            self.version,
            self.status,
            self.bytes,
            self.started.elapsed().as_micros()
        );
        match self.upstream_us {
            Some(us) => {
                let _ = write!(out, ",\"upstream_us\":{us}");
            }
            None => out.push_str(",\"upstream_us\":null"),
        }
        let _ = write!(out, ",\"cut_short\":{}}}", self.cut_short);
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar time.
struct Civil {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    millis: u16,
}

impl Civil {
    fn of(t: SystemTime) -> Civil {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (rest / 3600) as u8,
            minute: (rest / 60 % 60) as u8,
            second: (rest % 60) as u8,
            millis: since.subsec_millis() as u16,
        }
    }
}

/// nginx's escaping inside a quoted log field: `"`, `\` and bytes outside printable ASCII
/// become `\xHH`, so a client cannot forge a line or a field.
fn quoted(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
}

fn json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry() -> Entry {
        Entry {
            // 2026-11-25 10:04:05.678 UTC
            at: UNIX_EPOCH + Duration::from_millis(1_795_601_045_678),
            started: Instant::now(),
            listener: "main".into(),
            client: IpAddr::from([10, 0, 0, 7]),
            method: Method::GET,
            target: "/shop/cart?id=3".into(),
            version: Version::HTTP_11,
            host: Some("shop.example.com".into()),
            referer: None,
            user_agent: Some("curl/8.0 \"quoted\"".into()),
            request_id: Some("abc".into()),
            pool: Some("web".into()),
            server: Some("app1".into()),
            status: 200,
            bytes: 612,
            upstream_us: Some(1500),
            cut_short: false,
        }
    }

    fn line(e: &Entry, f: AccessFormat) -> String {
        let mut s = String::new();
        e.format(f, &mut s);
        s
    }

    #[test]
    fn common_and_combined_read_as_nginx_writes_them() {
        let e = entry();
        assert_eq!(
            line(&e, AccessFormat::Common),
            "10.0.0.7 - - [25/Nov/2026:10:04:05 +0000] \"GET /shop/cart?id=3 HTTP/1.1\" 200 612"
        );
        assert_eq!(
            line(&e, AccessFormat::Combined),
            "10.0.0.7 - - [25/Nov/2026:10:04:05 +0000] \"GET /shop/cart?id=3 HTTP/1.1\" 200 612 \"-\" \"curl/8.0 \\x22quoted\\x22\""
        );
        let empty = Entry {
            bytes: 0,
            ..entry()
        };
        assert!(line(&empty, AccessFormat::Common).ends_with(" 200 -"));
    }

    #[test]
    fn a_client_cannot_forge_a_line() {
        let e = Entry {
            target: "/a\n10.0.0.1 - - [x] \"GET /admin".into(),
            ..entry()
        };
        let l = line(&e, AccessFormat::Combined);
        assert!(!l.contains('\n'), "{l}");
        assert!(l.contains("/a\\x0A10.0.0.1 - - [x] \\x22GET /admin"), "{l}");
        let j = line(&e, AccessFormat::Json);
        assert!(
            !j.contains('\n') && j.contains("\\u000a10.0.0.1 - - [x] \\\"GET /admin"),
            "{j}"
        );
    }

    #[test]
    fn json_has_every_field() {
        let j = line(&entry(), AccessFormat::Json);
        assert!(j.starts_with("{\"time\":\"2026-11-25T10:04:05.678Z\",\"listener\":\"main\",\"client\":\"10.0.0.7\",\"method\":\"GET\",\"uri\":\"/shop/cart?id=3\",\"host\":\"shop.example.com\",\"referer\":null,\"user_agent\":\"curl/8.0 \\\"quoted\\\"\",\"request_id\":\"abc\",\"pool\":\"web\",\"server\":\"app1\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":612,\"duration_us\":"), "{j}");
        assert!(
            j.ends_with(",\"upstream_us\":1500,\"cut_short\":false}"),
            "{j}"
        );
    }

    #[test]
    fn dates_convert_across_leap_years_and_month_ends() {
        let at = |secs: u64| {
            let c = Civil::of(UNIX_EPOCH + Duration::from_secs(secs));
            (c.year, c.month, c.day, c.hour, c.minute, c.second)
        };
        assert_eq!(at(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(at(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(at(1_709_251_199), (2024, 2, 29, 23, 59, 59));
        assert_eq!(at(1_735_689_600), (2025, 1, 1, 0, 0, 0));
    }
}

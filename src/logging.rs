//! Logging: `tracing` events go to a rolling file written by a background thread (so a slow
//! disk never stalls an engine), and either to stderr (headless) or to an in-memory ring the
//! console's Log view reads (the console owns the terminal, so nothing may print to it).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;

use crate::config::LogConfig;

pub fn parse_level(level: &str) -> Option<LevelFilter> {
    match level {
        "error" => Some(LevelFilter::ERROR),
        "warn" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        "trace" => Some(LevelFilter::TRACE),
        _ => None,
    }
}

/// Where events go besides the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stderr,
    Ring,
}

/// A rotation by its config name: `minutely`, `hourly`, `daily` or `never`.
pub fn parse_rotation(name: &str) -> Option<Rotation> {
    match name {
        "minutely" => Some(Rotation::MINUTELY),
        "hourly" => Some(Rotation::HOURLY),
        "daily" => Some(Rotation::DAILY),
        "never" => Some(Rotation::NEVER),
        _ => None,
    }
}

/// A rolling file `file` in `dir` (created if missing); `what` names it in errors (`log`,
/// `access log`). Validation has checked `rotation`; anything else rotates daily.
pub fn rolling_file(
    what: &str,
    dir: &std::path::Path,
    file: &str,
    rotation: &str,
) -> std::io::Result<RollingFileAppender> {
    std::fs::create_dir_all(dir).map_err(|e| {
        std::io::Error::new(e.kind(), format!("{what} directory {}: {e}", dir.display()))
    })?;
    RollingFileAppender::builder()
        .rotation(parse_rotation(rotation).unwrap_or(Rotation::DAILY))
        .filename_prefix(file)
        .build(dir)
        .map_err(|e| std::io::Error::other(format!("{what} file in {}: {e}", dir.display())))
}

/// Installs the global subscriber. The guard flushes the file writer when dropped, so `main`
/// keeps it alive until exit; the ring is returned when `sink` is `Ring`.
pub fn init(config: &LogConfig, sink: Sink) -> std::io::Result<(WorkerGuard, Option<LogRing>)> {
    let level = parse_level(&config.level).unwrap_or(LevelFilter::INFO);
    let appender = rolling_file("log", &config.dir, &config.file, &config.rotation)?;
    let (file_writer, guard) = tracing_appender::non_blocking(appender);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(file_writer)
        .with_ansi(false);
    let stderr_layer = (sink == Sink::Stderr).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let ring = (sink == Sink::Ring).then(|| LogRing::new(RING_LINES));
    tracing_subscriber::registry()
        .with(level)
        .with(file_layer)
        .with(stderr_layer)
        .with(ring.clone())
        .init();
    Ok((guard, ring))
}

/// Lines the console keeps; older ones are in the log file.
const RING_LINES: usize = 5000;

/// A severity the console colours and filters by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn label(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }

    fn from_tracing(level: &Level) -> LogLevel {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        }
    }
}

/// One formatted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Position in the ring's whole history, so a reader can ask for what is new.
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub level: LogLevel,
    pub text: String,
}

/// The newest events, shared between the subscriber and the console.
#[derive(Clone)]
pub struct LogRing {
    inner: Arc<Mutex<RingInner>>,
}

struct RingInner {
    lines: VecDeque<LogLine>,
    cap: usize,
    next_seq: u64,
}

impl LogRing {
    pub fn new(cap: usize) -> LogRing {
        LogRing {
            inner: Arc::new(Mutex::new(RingInner {
                lines: VecDeque::with_capacity(cap.min(1024)),
                cap: cap.max(1),
                next_seq: 0,
            })),
        }
    }

    pub fn push(&self, level: LogLevel, text: String) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.lines.len() >= inner.cap {
            inner.lines.pop_front();
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.lines.push_back(LogLine {
            seq,
            at_ms: crate::replication::shared::now_ms(),
            level,
            text,
        });
    }

    /// Lines with `seq >= from`, oldest first (what a reader has not seen yet).
    pub fn since(&self, from: u64) -> Vec<LogLine> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let skip = inner
            .lines
            .front()
            .map_or(0, |first| from.saturating_sub(first.seq) as usize);
        inner.lines.iter().skip(skip).cloned().collect()
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for LogRing {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = EventText::default();
        event.record(&mut text);
        self.push(LogLevel::from_tracing(event.metadata().level()), text.0);
    }
}

/// The event's message followed by its other fields as `key=value`.
#[derive(Default)]
struct EventText(String);

impl Visit for EventText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            self.0.push_str(&fields);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_and_reads_from_a_position() {
        let ring = LogRing::new(3);
        for i in 0..5 {
            ring.push(LogLevel::Info, format!("line {i}"));
        }
        let all = ring.since(0);
        assert_eq!(
            all.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["line 2", "line 3", "line 4"]
        );
        assert_eq!(all[0].seq, 2);
        let newer = ring.since(4);
        assert_eq!(newer.len(), 1);
        assert_eq!(newer[0].text, "line 4");
        assert!(ring.since(5).is_empty());
    }
}

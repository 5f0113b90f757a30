//! Logging: `tracing` events go to stderr (headless) and to a rolling file written by a
//! background thread, so a slow disk never stalls an engine.

use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
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

/// Installs the global subscriber. The returned guard flushes the file writer when dropped,
/// so `main` keeps it alive until exit.
pub fn init(config: &LogConfig, to_stderr: bool) -> std::io::Result<WorkerGuard> {
    let level = parse_level(&config.level).unwrap_or(LevelFilter::INFO);
    let rotation = match config.rotation.as_str() {
        "minutely" => Rotation::MINUTELY,
        "hourly" => Rotation::HOURLY,
        "never" => Rotation::NEVER,
        _ => Rotation::DAILY,
    };
    std::fs::create_dir_all(&config.dir).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("log directory {}: {e}", config.dir.display()),
        )
    })?;
    let appender = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix(&config.file)
        .build(&config.dir)
        .map_err(|e| std::io::Error::other(format!("log file in {}: {e}", config.dir.display())))?;
    let (file_writer, guard) = tracing_appender::non_blocking(appender);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(file_writer)
        .with_ansi(false);
    let stderr_layer = to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    tracing_subscriber::registry()
        .with(level)
        .with(file_layer)
        .with(stderr_layer)
        .init();
    Ok(guard)
}

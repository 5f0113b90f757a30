//! A child's log lines, timestamped as they arrive: a test can wait for a line, measure when
//! it appeared, and see the whole log if it fails.

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub struct TimedLog {
    /// Names the process in failure messages.
    pub name: String,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl TimedLog {
    /// Takes over `node`'s log lines (its receiver is left empty).
    pub fn capture(name: &str, node: &mut super::Node) -> TimedLog {
        let (_unused, empty) = mpsc::channel();
        let rx = std::mem::replace(&mut node.log, empty);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        // Ends when the process's stderr closes.
        std::thread::spawn(move || {
            for line in rx.iter() {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), line));
            }
        });
        TimedLog {
            name: name.to_string(),
            lines,
        }
    }

    /// How many lines were logged so far (a position to search from).
    pub fn mark(&self) -> usize {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The first line at or after `from` containing `needle`, with its arrival time.
    pub fn find(&self, from: usize, needle: &str) -> Option<(Instant, String)> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .skip(from)
            .find(|(_, l)| l.contains(needle))
            .cloned()
    }

    /// How many lines at or after `from` contain `needle`.
    pub fn count(&self, from: usize, needle: &str) -> usize {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .skip(from)
            .filter(|(_, l)| l.contains(needle))
            .count()
    }

    /// Waits up to `limit` for a line containing `needle` logged at or after `from`.
    pub fn wait_line(&self, from: usize, needle: &str, limit: Duration) -> (Instant, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self.find(from, needle) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{} logged no line with {needle:?} within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TimedLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("----- log of {} ({} lines) -----", self.name, lines.len());
            for (_, l) in lines.iter() {
                eprintln!("{l}");
            }
        }
    }
}

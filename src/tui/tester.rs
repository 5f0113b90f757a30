//! The key tester's pure half: what a typed line means (a raw memcached request, a
//! convenience form, a target switch, the replication check) and the panel's state: the
//! input line with history and editing, the target and the transcript. The network half is
//! in `exchange.rs`.

use std::collections::VecDeque;

/// Transcript lines kept.
const TRANSCRIPT_LINES: usize = 500;
/// Input lines remembered for ↑/↓.
const HISTORY: usize = 200;
/// The key the replication check writes when none is given.
pub const CHECK_KEY: &str = "opsconsole:replcheck";

/// Where a request goes, as the operator chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetChoice {
    /// The selected cache node of this process.
    Here,
    /// That node's replication peer.
    Peer,
    /// A cache role of this process by name (`@master`, `@slave`).
    Node(String),
    /// Any memcached at `host:port`.
    Addr(String),
}

impl TargetChoice {
    /// `@here`, `@peer`, `@NAME` or `@host:port`.
    pub fn parse(s: &str) -> Option<TargetChoice> {
        let s = s.trim();
        match s {
            "" => None,
            "here" | "this" | "local" => Some(TargetChoice::Here),
            "peer" => Some(TargetChoice::Peer),
            _ if s.contains(':') => Some(TargetChoice::Addr(s.to_string())),
            _ => Some(TargetChoice::Node(s.to_string())),
        }
    }
}

/// A resolved destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A cache engine in this process (through `Command::CacheRequest`).
    Node(String),
    /// A server reached over TCP.
    Addr(String),
}

impl Target {
    pub fn label(&self) -> String {
        match self {
            Target::Node(n) => n.clone(),
            Target::Addr(a) => a.clone(),
        }
    }
}

/// What a submitted line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interpretation {
    Nothing,
    /// Send these bytes; `shown` is how the request reads in the transcript.
    Send {
        request: Vec<u8>,
        shown: String,
    },
    /// A storage command line whose data block comes on the next line.
    AwaitData(String),
    SwitchTarget(TargetChoice),
    /// Set a key here and time how long until the peer returns it.
    ReplCheck {
        key: String,
    },
    Help,
}

const STORAGE: &[&str] = &["set", "add", "replace", "append", "prepend", "cas"];

/// Reads one submitted line. `pending` is a storage command still waiting for its data.
pub fn interpret(line: &str, pending: Option<&str>) -> Interpretation {
    if let Some(command) = pending {
        return Interpretation::Send {
            request: format!("{command}\r\n{line}\r\n").into_bytes(),
            shown: format!("{command}\n{line}"),
        };
    }
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Interpretation::Nothing;
    }
    if let Some(rest) = trimmed.strip_prefix('@') {
        return match TargetChoice::parse(rest) {
            Some(t) => Interpretation::SwitchTarget(t),
            None => Interpretation::Help,
        };
    }
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    match words[0] {
        "help" => return Interpretation::Help,
        "check" if words.len() <= 2 => {
            return Interpretation::ReplCheck {
                key: words.get(1).unwrap_or(&CHECK_KEY).to_string(),
            };
        }
        _ => {}
    }
    if STORAGE.contains(&words[0]) {
        let numeric = |w: &[&str]| w.iter().all(|x| x.parse::<i64>().is_ok());
        let fields = if words[0] == "cas" { 5 } else { 4 };
        if words.len() > fields && numeric(&words[2..=fields]) {
            return Interpretation::AwaitData(trimmed.to_string());
        }
        if words[0] != "cas"
            && let Some((key, value, ttl)) = convenience_set(trimmed)
        {
            let request = format!("{} {key} 0 {ttl} {}\r\n{value}\r\n", words[0], value.len());
            return Interpretation::Send {
                shown: request.trim_end().replace("\r\n", "\n"),
                request: request.into_bytes(),
            };
        }
    }
    Interpretation::Send {
        request: format!("{trimmed}\r\n").into_bytes(),
        shown: trimmed.to_string(),
    }
}

/// `set KEY VALUE [TTL]`, the value optionally in double quotes (to hold spaces).
fn convenience_set(line: &str) -> Option<(String, String, u32)> {
    let mut rest = line.split_once(char::is_whitespace)?.1.trim_start();
    let (key, after) = rest.split_once(char::is_whitespace)?;
    rest = after.trim_start();
    let (value, after) = if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"')?;
        (q[..end].to_string(), q[end + 1..].trim())
    } else {
        match rest.split_once(char::is_whitespace) {
            Some((v, a)) => (v.to_string(), a.trim()),
            None => (rest.to_string(), ""),
        }
    };
    let ttl = match after {
        "" => 0,
        t => t.parse::<u32>().ok()?,
    };
    (!value.contains(['\r', '\n'])).then(|| (key.to_string(), value, ttl))
}

/// A single-line editor with a cursor (in characters) and history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineInput {
    pub text: String,
    pub cursor: usize,
    history: Vec<String>,
    browsing: Option<usize>,
}

impl LineInput {
    fn byte_at(&self, chars: usize) -> usize {
        self.text
            .char_indices()
            .nth(chars)
            .map_or(self.text.len(), |(i, _)| i)
    }

    pub fn insert(&mut self, c: char) {
        let at = self.byte_at(self.cursor);
        self.text.insert(at, c);
        self.cursor += 1;
    }

    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    pub fn delete(&mut self) {
        if self.cursor < self.text.chars().count() {
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.text.chars().count());
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.text.chars().count();
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.cursor = 0;
        self.browsing = None;
    }

    /// Takes the line, remembering it (without repeating the last entry).
    pub fn submit(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            if self.history.len() >= HISTORY {
                self.history.remove(0);
            }
            self.history.push(line.clone());
        }
        line
    }

    pub fn history_prev(&mut self) {
        if self.history.is_empty() {
            return;
        }
        let i = match self.browsing {
            Some(i) => i.saturating_sub(1),
            None => self.history.len() - 1,
        };
        self.browsing = Some(i);
        self.text = self.history[i].clone();
        self.end();
    }

    pub fn history_next(&mut self) {
        match self.browsing {
            Some(i) if i + 1 < self.history.len() => {
                self.browsing = Some(i + 1);
                self.text = self.history[i + 1].clone();
                self.end();
            }
            Some(_) => self.clear(),
            None => {}
        }
    }
}

/// What a transcript line is, for its style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    Sent,
    Reply,
    Info,
    Error,
}

/// The key tester panel's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Tester {
    pub input: LineInput,
    pub target: TargetChoice,
    /// A storage command line waiting for its data block.
    pub pending: Option<String>,
    pub transcript: VecDeque<(Said, String)>,
    /// Requests sent and not yet answered.
    pub in_flight: usize,
}

impl Default for Tester {
    fn default() -> Self {
        let mut t = Tester {
            input: LineInput::default(),
            target: TargetChoice::Here,
            pending: None,
            transcript: VecDeque::new(),
            in_flight: 0,
        };
        t.say(
            Said::Info,
            "Type memcached commands (get k, set k v [ttl], delete k, or raw \"set k 0 0 3\" then the data). `check` tests replication; @peer / @here / @host:port pick the target; `help` for more."
                .into(),
        );
        t
    }
}

pub const HELP: &str = "\
get KEY...            raw commands go as typed (stats, incr, mg, ms, ...)
set KEY VALUE [TTL]   the length is computed; quote a value with spaces: \"a b\"
set KEY 0 0 3         raw storage line: the next line is the data block
delete KEY
check [KEY]           set here, read on the peer: shows whether and how fast it replicated
@here @peer @NAME @host:port   choose where requests go (Ctrl-T cycles here/peer)";

impl Tester {
    pub fn say(&mut self, kind: Said, text: String) {
        for line in text.lines() {
            if self.transcript.len() >= TRANSCRIPT_LINES {
                self.transcript.pop_front();
            }
            self.transcript.push_back((kind, line.to_string()));
        }
    }

    /// The prompt shows where the line goes, or that a data block is expected.
    pub fn prompt(&self, target: &str) -> String {
        if self.pending.is_some() {
            "data> ".into()
        } else {
            format!("{target}> ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(i: Interpretation) -> String {
        match i {
            Interpretation::Send { request, .. } => String::from_utf8(request).expect("utf8"),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn convenience_forms_compute_the_length() {
        assert_eq!(
            sent(interpret("set k hello", None)),
            "set k 0 0 5\r\nhello\r\n"
        );
        assert_eq!(
            sent(interpret("set k hello 60", None)),
            "set k 0 60 5\r\nhello\r\n"
        );
        assert_eq!(
            sent(interpret("set k \"a b c\" 5", None)),
            "set k 0 5 5\r\na b c\r\n"
        );
        assert_eq!(sent(interpret("add k v", None)), "add k 0 0 1\r\nv\r\n");
        assert_eq!(sent(interpret("get a b", None)), "get a b\r\n");
        assert_eq!(sent(interpret("  delete k ", None)), "delete k\r\n");
    }

    #[test]
    fn a_raw_storage_line_waits_for_its_data() {
        assert_eq!(
            interpret("set aa 0 0 3", None),
            Interpretation::AwaitData("set aa 0 0 3".into())
        );
        assert_eq!(
            interpret("cas aa 0 0 3 7", None),
            Interpretation::AwaitData("cas aa 0 0 3 7".into())
        );
        assert_eq!(
            sent(interpret("111", Some("set aa 0 0 3"))),
            "set aa 0 0 3\r\n111\r\n"
        );
    }

    #[test]
    fn targets_checks_and_blank_lines() {
        assert_eq!(
            interpret("@peer", None),
            Interpretation::SwitchTarget(TargetChoice::Peer)
        );
        assert_eq!(
            interpret("@127.0.0.1:11211", None),
            Interpretation::SwitchTarget(TargetChoice::Addr("127.0.0.1:11211".into()))
        );
        assert_eq!(
            interpret("@slave", None),
            Interpretation::SwitchTarget(TargetChoice::Node("slave".into()))
        );
        assert_eq!(
            interpret("check", None),
            Interpretation::ReplCheck {
                key: CHECK_KEY.into()
            }
        );
        assert_eq!(interpret("   ", None), Interpretation::Nothing);
    }

    #[test]
    fn the_line_editor_edits_and_remembers() {
        let mut l = LineInput::default();
        for c in "gt k".chars() {
            l.insert(c);
        }
        l.home();
        l.right();
        l.insert('e');
        assert_eq!(l.text, "get k");
        l.end();
        l.backspace();
        l.insert('x');
        assert_eq!(l.submit(), "get x");
        for c in "stats".chars() {
            l.insert(c);
        }
        l.submit();
        l.history_prev();
        assert_eq!(l.text, "stats");
        l.history_prev();
        assert_eq!(l.text, "get x");
        l.history_next();
        assert_eq!(l.text, "stats");
        l.history_next();
        assert_eq!(l.text, "");
    }
}

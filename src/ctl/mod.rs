//! `opsconsole ctl`: one typed command to a running node through its admin API, the way
//! HAProxy's runtime API or `ipvsadm` is used from a shell or a script. Each subcommand
//! becomes one `Command` (or a snapshot read) sent with the admin client; the answer is
//! printed and the exit code says how it went (see `EXIT_CODES`).
//!
//! It runs on a small current-thread runtime and starts neither logging nor any engine: it
//! is a client, safe to run next to the node it steers.

pub mod args;
pub mod cache;
pub mod request;
pub mod show;

use std::io::Write;
use std::process::ExitCode;

pub use args::CtlArgs;

use crate::admin::client::{ClientError, Endpoint};
use args::CtlCommand;

/// What `ctl --help`, the man page and the README promise scripts.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the node refused the command (its reason on stderr), or `get` found no item
  2  usage error (bad arguments, or --role needed)
  3  cannot reach the node (connection refused, no answer within --timeout)
  4  unauthorized: the token is missing or wrong (nothing changed)
  5  unexpected answer (not an opsconsole admin API?)";

/// How a ctl run ended, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Refused = 1,
    Usage = 2,
    Unreachable = 3,
    Unauthorized = 4,
    Unexpected = 5,
}

/// A run that did not do what was asked: why, and the exit code that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Usage, message)
    }

    /// A client error, worded for someone at a shell: which node, and what to do.
    fn from_client(e: ClientError, endpoint: &Endpoint, has_token: bool) -> Failure {
        match e {
            ClientError::Unreachable(why) => {
                Failure::new(Exit::Unreachable, format!("cannot reach the node: {why}"))
            }
            ClientError::Unauthorized if has_token => Failure::new(
                Exit::Unauthorized,
                format!(
                    "{} refused the token (401): nothing was done",
                    endpoint.authority()
                ),
            ),
            ClientError::Unauthorized => Failure::new(
                Exit::Unauthorized,
                format!(
                    "{} wants a token (401): give --token-file FILE, --token or OPSCONSOLE_TOKEN",
                    endpoint.authority()
                ),
            ),
            ClientError::Refused(why) => Failure::new(Exit::Refused, format!("refused: {why}")),
            ClientError::Protocol(why) => Failure::new(
                Exit::Unexpected,
                format!("unexpected answer from {}: {why}", endpoint.authority()),
            ),
        }
    }
}

/// Runs one ctl command: prints its output on stdout, or one line on stderr, and returns
/// the exit code.
pub fn run(args: &CtlArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(rt) => rt.block_on(execute(args)),
        Err(e) => Err(Failure::new(
            Exit::Unexpected,
            format!("cannot start the runtime: {e}"),
        )),
    };
    match outcome {
        Ok(output) => {
            // A reader that went away (`ctl show | head`) is not an error worth a panic.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(output.as_bytes());
            if !output.is_empty() && !output.ends_with('\n') {
                let _ = out.write_all(b"\n");
            }
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("opsconsole ctl: {}", one_line(&failure.message));
            ExitCode::from(failure.exit as u8)
        }
    }
}

/// A message on one line, however the node worded it.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

/// Reaches the node and does what `args` asks; the text to print.
async fn execute(args: &CtlArgs) -> Result<String, Failure> {
    let token = args.token()?;
    let has_token = token.is_some();
    let endpoint = Endpoint::parse(&args.admin, token)
        .map_err(Failure::usage)?
        .with_timeout(args.timeout);
    let client = |e| Failure::from_client(e, &endpoint, has_token);
    match &args.command {
        CtlCommand::Show { json: true } => {
            let (status, body) = endpoint
                .get_text("/api/v1/snapshot")
                .await
                .map_err(client)?;
            show::pretty_json(status, &body).map_err(|why| client(ClientError::Protocol(why)))
        }
        CtlCommand::Show { json: false } => {
            let snapshot = endpoint.snapshot().await.map_err(client)?;
            Ok(show::render(&snapshot))
        }
        command => {
            // A role left out is the node's only cache role: that takes a look first.
            let snapshot = if request::needs_snapshot(command) {
                Some(endpoint.snapshot().await.map_err(client)?)
            } else {
                None
            };
            let planned = request::plan(command, snapshot.as_ref())?;
            let reply = endpoint.command(&planned.command).await.map_err(client)?;
            planned.read(&reply.output)
        }
    }
}

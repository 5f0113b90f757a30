//! What the command line says about itself, generated from its clap definition so it cannot
//! drift from the real flags: shell completions (`opsconsole completions SHELL`) and roff man
//! pages (`opsconsole manpage [SUBCOMMAND]`).

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// A subcommand's own page (e.g. ctl, for opsconsole-ctl(1)) instead of opsconsole(1).
    #[arg(value_name = "SUBCOMMAND")]
    pub subcommand: Option<String>,
}

/// Writes the completion script for `args.shell` to stdout.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "opsconsole", &mut out);
    emit(&out)
}

/// Writes a man page to stdout: opsconsole(1), or opsconsole-SUBCOMMAND(1).
pub fn manpage(args: &ManpageArgs) -> ExitCode {
    match render_manpage(args.subcommand.as_deref()) {
        Ok(page) => emit(page.as_bytes()),
        Err(e) => {
            eprintln!("opsconsole manpage: {e}");
            ExitCode::from(2)
        }
    }
}

/// A page as roff text. A subcommand's page lists its own subcommands in full (usage,
/// arguments) rather than pointing at pages of their own: `ctl`'s are one-liners that
/// belong together.
pub fn render_manpage(subcommand: Option<&str>) -> Result<String, String> {
    let mut root = Cli::command();
    root.build();
    let command = match subcommand {
        None => root,
        Some(name) => {
            let names: Vec<&str> = visible_subcommands(&root).map(|s| s.get_name()).collect();
            let found = root.find_subcommand(name).cloned().ok_or_else(|| {
                format!(
                    "no subcommand '{name}'; pages exist for: {}",
                    names.join(", ")
                )
            })?;
            // Titled as man(1) finds it (`man opsconsole-ctl`); the synopsis keeps the
            // words typed: `opsconsole ctl`.
            let title = format!("opsconsole-{}", found.get_name());
            found.display_name(title)
        }
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .source(concat!("opsconsole ", env!("CARGO_PKG_VERSION")))
        .manual("opsconsole manual")
        .render(&mut page)
        .map_err(|e| e.to_string())?;
    let mut page = String::from_utf8(page).map_err(|e| e.to_string())?;
    if subcommand.is_some() && visible_subcommands(&command).next().is_some() {
        page = replace_section(&page, "SUBCOMMANDS", &commands_section(&command));
    }
    if let Some(text) = command
        .get_after_long_help()
        .or_else(|| command.get_after_help())
    {
        page = replace_section(&page, "EXTRA", &after_help_section(&text.to_string()));
    }
    Ok(title_first(&page))
}

fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// `COMMANDS`: each subcommand's usage, what it does, and its arguments.
fn commands_section(cmd: &clap::Command) -> String {
    use clap_mangen::roff::{Roff, bold, line_break, roman};
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in visible_subcommands(cmd) {
        roff.control("TP", []);
        let usage = sub.clone().render_usage().to_string();
        let mut lines = Vec::new();
        for line in usage.trim_start_matches("Usage:").lines() {
            if !lines.is_empty() {
                lines.push(line_break());
            }
            lines.push(bold(line.trim()));
        }
        roff.text(lines);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        let args: Vec<&clap::Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "help")
            .collect();
        if args.is_empty() {
            continue;
        }
        roff.control("RS", []);
        for arg in args {
            roff.control("TP", []);
            roff.text([bold(arg_label(arg))]);
            let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            if !possible.is_empty() && arg.is_positional() {
                help.push_str(&format!(" [possible values: {}]", possible.join(", ")));
            }
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() && arg.get_action().takes_values() {
                help.push_str(&format!(" [default: {}]", defaults.join(", ")));
            }
            if !help.is_empty() {
                roff.text([roman(help.trim())]);
            }
        }
        roff.control("RE", []);
    }
    without_preamble(&roff)
}

/// The text after `--help` ("Examples:", "Exit codes:" and their lines) as a section named
/// by its first line, lines kept as written (clap's renderer fills them into a paragraph).
fn after_help_section(text: &str) -> String {
    use clap_mangen::roff::{Roff, roman};
    let mut lines = text.lines();
    let heading = lines
        .next()
        .unwrap_or("Notes")
        .trim_end_matches(':')
        .to_uppercase();
    let mut roff = Roff::new();
    roff.control("SH", [heading.as_str()]);
    roff.control("nf", []);
    for line in lines {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    without_preamble(&roff)
}

/// A piece of a page: the page already defines the apostrophe string this preamble sets up.
fn without_preamble(roff: &clap_mangen::roff::Roff) -> String {
    roff.render()
        .lines()
        .filter(|l| !is_preamble(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `<POOL/SERVER>`, `--hold <SECONDS>`, `--json`.
fn arg_label(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    match arg.get_long() {
        None => format!("<{value}>"),
        Some(long) if arg.get_action().takes_values() => format!("--{long} <{value}>"),
        Some(long) => format!("--{long}"),
    }
}

fn is_preamble(line: &str) -> bool {
    line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq")
}

/// The page with section `name` (up to the next `.SH`) replaced by `with`.
fn replace_section(page: &str, name: &str, with: &str) -> String {
    let heading = format!(".SH {name}\n");
    let Some(start) = page.find(&heading) else {
        return page.to_string();
    };
    let after = start + heading.len();
    let end = page[after..]
        .find("\n.SH ")
        .map_or(page.len(), |i| after + i + 1);
    format!("{}{with}{}", &page[..start], &page[end..])
}

/// `.TH` as the first line, as man-db and linters expect; the apostrophe preamble clap's
/// renderer puts first works as well after it.
fn title_first(page: &str) -> String {
    let lines: Vec<&str> = page.lines().collect();
    let Some(th) = lines.iter().position(|l| l.starts_with(".TH ")) else {
        return page.to_string();
    };
    let mut out = String::with_capacity(page.len());
    out.push_str(lines[th]);
    out.push('\n');
    for (i, line) in lines.iter().enumerate() {
        if i != th {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn emit(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opsconsole: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

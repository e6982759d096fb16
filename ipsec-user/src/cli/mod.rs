//! The `xipsec` command line: clap definitions, output formatters, and a client that talks to
//! the daemon and nothing else.
//!
//! Contract:
//! - Commands, options and short flags are SPEC.md's; a leading `esxcli network ip ipsec` (with
//!   esxcli's `--formatter` before it, if any), or `network ip ipsec` alone, is accepted and
//!   stripped ([`normalize_args`]).
//! - Option values go to the daemon as raw strings; the model validates them there.
//! - Success: output on stdout, exit 0 (add and remove print nothing, like esxcli). Failure: one
//!   line on stderr starting `error:`, non-zero exit (2 for command-line usage, 1 otherwise), and
//!   nothing changed.

pub mod apply;
pub mod args;
pub mod batch;
pub mod client;
pub mod explain;
pub mod export;
pub mod format;
pub mod generate;
pub mod ike;
pub mod wireshark;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

pub use args::{Cli, Command, DaemonArgs, Formatter};
use args::{Misplaced, OutputArgs, SaCommand, SpCommand};
use format::{Layout, Row};

use crate::daemon::protocol::{Request, Response};

/// esxcli's namespace for these commands, accepted before `sa`/`sp` so pasted lines work.
const ESXCLI_PREFIX: [&str; 4] = ["esxcli", "network", "ip", "ipsec"];

/// A command that failed: printed as `error: {message}`.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }

    /// Print it to stderr (one line) and return the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

/// Strip a leading `esxcli network ip ipsec` (after the program name) so pasted esxcli lines
/// parse; esxcli's global `--formatter X` / `--formatter=X`, which precedes the namespace there,
/// is moved after the command, where xipsec takes it.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let args: Vec<OsString> = args.into_iter().collect();
    // Options esxcli users put before the namespace (`esxcli --formatter=json network ...`),
    // and our own `--socket`, may precede the prefix; they move behind the command.
    let mut i = 1;
    let mut moved = Vec::new();
    let mut seen_esxcli = false;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        if arg == ESXCLI_PREFIX[0] && !seen_esxcli {
            seen_esxcli = true;
            i += 1;
        } else if (arg == "--formatter" || arg == "--socket") && i + 1 < args.len() {
            moved.extend_from_slice(&args[i..i + 2]);
            i += 2;
        } else if arg.starts_with("--formatter=") || arg.starts_with("--socket=") {
            moved.push(args[i].clone());
            i += 1;
        } else {
            break;
        }
    }
    let rest = &args[i..];
    let namespace = &ESXCLI_PREFIX[1..];
    // `network ip ipsec ...` without `esxcli` is accepted too (esxcli's own namespace).
    let matches_prefix = rest.len() >= namespace.len()
        && rest
            .iter()
            .zip(namespace)
            .all(|(a, p)| a.to_str() == Some(p));
    if !matches_prefix {
        return args;
    }
    let mut out = vec![args[0].clone()];
    out.extend_from_slice(&rest[namespace.len()..]);
    out.extend(moved);
    out
}

/// Why [`parse`] did not produce a command to run.
#[derive(Debug)]
pub enum Exit {
    /// `--help` or `--version` was printed: exit 0.
    Printed,
    /// A usage error.
    Failed(Failure),
}

impl Exit {
    /// Print what is left to print and return the exit code.
    pub fn report(&self) -> ExitCode {
        match self {
            Self::Printed => ExitCode::SUCCESS,
            Self::Failed(failure) => failure.report(),
        }
    }
}

/// Parse the (normalised) command line; a usage error becomes a one-line failure (exit 2).
pub fn parse(args: Vec<OsString>) -> Result<Cli, Exit> {
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            // --help, --version: print as clap does.
            let _ = e.print();
            Err(Exit::Printed)
        }
        Err(e) => Err(Exit::Failed(Failure {
            message: one_line(&e.render().to_string()),
            code: 2,
        })),
    }
}

/// Fold clap's multi-line usage error into one line: the message, its details and tips, then
/// where to look for help.
fn one_line(rendered: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut help = None;
    let mut in_usage = false;
    for line in rendered.lines() {
        let line = line.trim();
        if line.is_empty() {
            in_usage = false;
            continue;
        }
        if line.starts_with("Usage:") {
            in_usage = true;
            continue;
        }
        if in_usage {
            continue;
        }
        if let Some(more) = line.strip_prefix("For more information, ") {
            help = Some(more.trim_end_matches('.').to_owned());
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line).to_owned());
    }
    let mut message = String::new();
    for part in parts {
        if !message.is_empty() {
            // "the following required arguments were not provided:" introduces what follows.
            message.push_str(if message.ends_with(':') { " " } else { "; " });
        }
        message.push_str(&part);
    }
    if let Some(help) = help {
        message.push_str(" (");
        message.push_str(&help);
        message.push(')');
    }
    message
}

/// Run a client command (anything but `daemon`).
pub fn run(cli: Cli) -> Result<(), Failure> {
    let socket = cli.socket.as_path();
    match cli.command {
        Command::Sa(SaCommand::List(out)) => list(socket, &Request::SaList, &out),
        Command::Sa(SaCommand::Add(a)) => {
            let args: crate::model::SaAddArgs = (*a).into();
            change(socket, &Request::SaAdd(args.clone()))?;
            format::warn_after_sa_add(&args);
            Ok(())
        }
        Command::Sa(SaCommand::Remove(a)) => change(socket, &Request::SaRemove(a.into())),
        Command::Sa(SaCommand::ResetReplay(a)) => {
            change(socket, &Request::SaResetReplay { sa_name: a.sa_name })
        }
        Command::Sp(SpCommand::List(out)) => list(socket, &Request::SpList, &out),
        Command::Sp(SpCommand::Add(a)) => change(socket, &ike::sp_add_request(*a)),
        Command::Sp(SpCommand::Remove(a)) => {
            if let Some(name) = &a.sa_name {
                // The source document removes an SP with `sp remove --sa-name`; that is a typo.
                return Err(Failure::new(format!(
                    "sp remove takes --sp-name, not --sa-name (did you mean 'xipsec sp remove \
                     --sp-name {name}'?)"
                )));
            }
            change(socket, &Request::SpRemove(a.into()))
        }
        Command::Batch(a) => batch::run(socket, &a),
        Command::Stats(out) => list(socket, &Request::Stats, &out),
        Command::Status(out) => list(socket, &Request::Status, &out),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "xipsec", &mut std::io::stdout());
            Ok(())
        }
        Command::Add(m) => Err(misplaced("add", &m)),
        Command::Remove(m) => Err(misplaced("remove", &m)),
        Command::List(m) => Err(misplaced("list", &m)),
        Command::Apply(a) => apply::run(socket, &a),
        Command::Export(a) => export::run(socket, &a),
        Command::Sa(SaCommand::Export(a)) => wireshark::run(socket, &a),
        Command::Generate(what) => generate::run(&what),
        Command::Daemon(_) => Err(Failure::new("the daemon is not a client command")),
        Command::Explain(a) => explain::run(socket, &a),
        Command::Ike(c) => ike::run(socket, c),
    }
}

/// `add`/`remove`/`list` without `sa`/`sp` (the source document prints `esxcli network ip
/// ipsec add` for an SP): point at the command that was meant.
fn misplaced(verb: &str, m: &Misplaced) -> Failure {
    let names_option = |prefix: &str| {
        m.rest
            .iter()
            .any(|a| a.starts_with(prefix) || (prefix == "--sp-" && a.starts_with("--flow-")))
    };
    let noun = if names_option("--sp-") {
        "sp"
    } else if names_option("--sa-") || m.rest.iter().any(|a| a.contains("-algorithm")) {
        "sa"
    } else {
        return Failure {
            message: format!("did you mean 'xipsec sa {verb}' or 'xipsec sp {verb}'?"),
            code: 2,
        };
    };
    Failure {
        message: format!("did you mean 'xipsec {noun} {verb}'?"),
        code: 2,
    }
}

fn call(socket: &Path, request: &Request) -> Result<Response, Failure> {
    call_within(socket, request, client::TIMEOUT)
}

fn call_within(
    socket: &Path,
    request: &Request,
    timeout: std::time::Duration,
) -> Result<Response, Failure> {
    match client::call_within(socket, request, timeout) {
        Ok(Response::Error { message }) => Err(Failure::new(message)),
        Ok(response) => Ok(response),
        Err(e) => Err(Failure::new(crate::model::Chain(&e).to_string())),
    }
}

/// A change: silent on success, like esxcli.
fn change(socket: &Path, request: &Request) -> Result<(), Failure> {
    match call(socket, request)? {
        Response::Added { .. } | Response::Removed { .. } | Response::ReplayReset { .. } => Ok(()),
        other => Err(unexpected(&other)),
    }
}

fn list(socket: &Path, request: &Request, out: &OutputArgs) -> Result<(), Failure> {
    let (layout, rows): (&Layout, Vec<Row>) = match call(socket, request)? {
        Response::SaList(sas) => (&format::SA_LAYOUT, sas.iter().map(format::sa_row).collect()),
        Response::SpList(sps) => (&format::SP_LAYOUT, sps.iter().map(format::sp_row).collect()),
        Response::Stats(stats) => (&format::STATS_LAYOUT, format::stats_rows(&stats)),
        Response::Status(status) => (&format::STATUS_LAYOUT, vec![format::status_row(&status)]),
        other => return Err(unexpected(&other)),
    };
    print(&format::render(out.formatter, layout, &rows))
}

/// Write `text` to stdout; `xipsec sp list | head` closing the pipe early is not an error.
fn print(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(format!("cannot write the output: {e}")))
        }
        _ => Ok(()),
    }
}

fn unexpected(response: &Response) -> Failure {
    Failure::new(format!(
        "the daemon sent an unexpected answer (is it the same version as this xipsec?): {response:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn esxcli_prefix_is_stripped_and_formatter_moved() {
        assert_eq!(
            normalize_args(os(&[
                "xipsec", "esxcli", "network", "ip", "ipsec", "sa", "list"
            ])),
            os(&["xipsec", "sa", "list"])
        );
        assert_eq!(
            normalize_args(os(&[
                "xipsec",
                "esxcli",
                "--formatter",
                "json",
                "network",
                "ip",
                "ipsec",
                "sp",
                "list"
            ])),
            os(&["xipsec", "sp", "list", "--formatter", "json"])
        );
        assert_eq!(
            normalize_args(os(&[
                "xipsec",
                "esxcli",
                "--formatter=csv",
                "network",
                "ip",
                "ipsec",
                "sa",
                "list"
            ])),
            os(&["xipsec", "sa", "list", "--formatter=csv"])
        );
        // Without `esxcli`, as the namespace alone.
        assert_eq!(
            normalize_args(os(&["xipsec", "network", "ip", "ipsec", "sa", "list"])),
            os(&["xipsec", "sa", "list"])
        );
        assert_eq!(
            normalize_args(os(&[
                "xipsec",
                "--formatter=json",
                "network",
                "ip",
                "ipsec",
                "sp",
                "list"
            ])),
            os(&["xipsec", "sp", "list", "--formatter=json"])
        );
        // Not the full prefix: left alone, so clap reports it.
        assert_eq!(
            normalize_args(os(&["xipsec", "esxcli", "network", "sa"])),
            os(&["xipsec", "esxcli", "network", "sa"])
        );
    }

    #[test]
    fn usage_errors_are_one_line() {
        let Err(Exit::Failed(err)) = parse(os(&["xipsec", "sa", "list", "--formatter", "yaml"]))
        else {
            panic!("a bad formatter is a usage error");
        };
        assert_eq!(err.code, 2);
        assert!(!err.message.contains('\n'), "{}", err.message);
        assert!(err.message.contains("--formatter"), "{}", err.message);
        assert!(err.message.contains("json"), "{}", err.message);
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}

//! `xipsec batch FILE`: many adds and removes, read from a file of commands, applied as one
//! change.
//!
//! Contract:
//! - The file holds one command per line exactly as typed at the shell (`sa add ...`,
//!   `sp remove ...`; shell quoting; a leading `xipsec` or pasted `esxcli network ip ipsec`
//!   accepted); blank lines and `#` comments are skipped. Each line is parsed by the same clap
//!   definitions as the single command ([`Cli`]): there is no second parser.
//! - Only `sa add`, `sa remove`, `sp add` and `sp remove` may appear. A line that does not parse
//!   fails the whole batch before the daemon is asked, with `line N (item M): ...` and the
//!   option at fault; nothing changes.
//! - The daemon checks the items as a whole, in order, and commits them as one change or
//!   refuses them all, naming the first refused item the same way (see `daemon::batch`).
//! - Success prints one line on stdout: the new configuration generation and the counts.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, FromArgMatches};

use super::args::{SaAdd, SaCommand, SaRemove, SpAdd, SpCommand, SpRemove};
use super::{Cli, Command, Failure, call_within, misplaced, normalize_args, one_line, unexpected};
use crate::daemon::batch::where_;
use crate::daemon::protocol::{Batch, BatchItem, Change, Request, Response};

/// `xipsec batch --help`: what it does.
pub const LONG_ABOUT: &str = "Apply several adds and removes as one change: all or nothing.\n\n\
    FILE holds one command per line, exactly as typed at the shell: `sa add ...`, `sa remove \
    ...`, `sp add ...`, `sp remove ...` (a leading `xipsec` or a pasted `esxcli network ip \
    ipsec` is accepted). Blank lines and lines starting with `#` are skipped; `-` reads standard \
    input.\n\n\
    The daemon checks every line, in order, each against the ones before it, as if typed one at \
    a time. If any is refused, nothing changes and the error names its line and option. \
    Otherwise all of them are applied together: packets see the old policies or the new ones, \
    never a mix, and a crash leaves one or the other. Concurrent batches are applied one after \
    the other.\n\n\
    Every change moves the configuration generation on by one (a batch counts as one); `xipsec \
    status` shows it. With --expect-generation, the batch is refused (nothing changed) if the \
    configuration has moved on since that generation.";

/// `xipsec batch --help`: an example.
pub const EXAMPLE: &str = "Example:\n  \
    $ cat rekey.txt\n  \
    # New SA first, then the policy moves to it, then the old SA goes.\n  \
    sa add --sa-source fd00::1 --sa-destination fd00::2 --sa-mode transport --sa-spi 0x2001 \\\n    \
    --encryption-algorithm aes128-cbc --encryption-key 0x00112233445566778899aabbccddeeff \\\n    \
    --integrity-algorithm hmac-sha2-256 \\\n    \
    --integrity-key 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f --sa-name sa-new\n  \
    sp remove --sp-name to-b\n  \
    sp add --sp-source fd00::1/128 --sp-destination fd00::2/128 --source-port any \\\n    \
    --destination-port any --flow-direction out --sa-name sa-new --sp-name to-b\n  \
    sa remove --sa-name sa-old\n  \
    $ xipsec batch rekey.txt --expect-generation 12\n  \
    generation 13: 2 added, 2 removed\n\n\
    (Write each command on one line in the file: the `\\` continuations above are for this page.)";

/// `xipsec batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// File of commands, one per line; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Refuse the batch, changing nothing, unless the configuration is at generation N (see
    /// `xipsec status`).
    #[arg(long, value_name = "N")]
    pub expect_generation: Option<u64>,
}

/// Run `xipsec batch`.
pub(super) fn run(socket: &Path, args: &BatchArgs) -> Result<(), Failure> {
    let text = read(&args.file)?;
    let items = parse(&text)?;
    let request = Request::Batch(Batch {
        expect_generation: args.expect_generation,
        items,
    });
    match call_within(socket, &request, super::client::BATCH_TIMEOUT)? {
        Response::BatchApplied {
            generation,
            added,
            removed,
        } => {
            println!("generation {generation}: {added} added, {removed} removed");
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

pub(super) fn read(file: &Path) -> Result<String, Failure> {
    let mut text = String::new();
    let read = if file == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| Failure::new(format!("cannot read {}: {e}", file.display())))?;
    Ok(text)
}

/// The changes of a batch file, each with its line number; see the module docs.
pub fn parse(text: &str) -> Result<Vec<BatchItem>, Failure> {
    let lines: Vec<(u64, &str)> = (1u64..)
        .zip(text.lines())
        .map(|(line, content)| (line, content.trim()))
        .filter(|(_, content)| !content.is_empty() && !content.starts_with('#'))
        .collect();
    // clap allocates a lot per line: a file of every policy the datapath holds parses in
    // seconds, so the lines are split over the CPUs (each chunk with its own command tree,
    // built once: building it per line would cost more than the parsing).
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let chunk = lines.len().div_ceil(threads).max(1);
    let parsed: Vec<Result<Vec<Change>, (usize, String, u8)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = lines
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                scope.spawn(move || {
                    let mut parsers = Parsers::new();
                    part.iter()
                        .enumerate()
                        .map(|(i, (_, content))| {
                            parse_line(&mut parsers, content)
                                .map_err(|(message, code)| (n * chunk + i, message, code))
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a batch parser thread panicked"))
            .collect()
    });
    let mut items = Vec::with_capacity(lines.len());
    for changes in parsed {
        // Chunks are in file order, so the first error met is the first in the file.
        let changes = changes.map_err(|(i, message, code)| Failure {
            message: format!("{}{message}", where_(i + 1, Some(lines[i].0))),
            code,
        })?;
        items.extend(
            changes
                .into_iter()
                .zip(&lines[items.len()..])
                .map(|(change, &(line, _))| BatchItem {
                    line: Some(line),
                    change,
                }),
        );
    }
    Ok(items)
}

/// The clap commands a batch line is parsed with: the whole command line ([`Cli`]) and, for
/// the four changes, each change's own arguments on their own (the same `Args` definitions,
/// without the command tree around them, whose global options and sub-command matches cost as
/// much again per line).
struct Parsers {
    full: clap::Command,
    sa_add: clap::Command,
    sa_remove: clap::Command,
    sp_add: clap::Command,
    sp_remove: clap::Command,
}

impl Parsers {
    fn new() -> Self {
        fn alone<T: Args>(name: &'static str) -> clap::Command {
            T::augment_args(clap::Command::new(name).no_binary_name(true))
        }
        Self {
            full: Cli::command(),
            sa_add: alone::<SaAdd>("sa add"),
            sa_remove: alone::<SaRemove>("sa remove"),
            sp_add: alone::<SpAdd>("sp add"),
            sp_remove: alone::<SpRemove>("sp remove"),
        }
    }

    /// The change `argv` (program name first) asks for when it is one of the four and parses
    /// cleanly on its own; `None` sends the line to the whole command line's parser, which
    /// also words any error exactly as the single command would.
    fn change(&mut self, argv: &[OsString]) -> Option<Command> {
        fn parsed<T: FromArgMatches>(command: &mut clap::Command, rest: &[OsString]) -> Option<T> {
            let mut matches = command.try_get_matches_from_mut(rest).ok()?;
            // `_mut` takes the values out instead of cloning every match first.
            T::from_arg_matches_mut(&mut matches).ok()
        }
        let noun = argv.get(1)?.to_str()?;
        let verb = argv.get(2)?.to_str()?;
        let rest = &argv[3..];
        Some(match (noun, verb) {
            ("sa", "add") => Command::Sa(SaCommand::Add(Box::new(parsed(&mut self.sa_add, rest)?))),
            ("sa", "remove") => Command::Sa(SaCommand::Remove(parsed(&mut self.sa_remove, rest)?)),
            ("sp", "add") => Command::Sp(SpCommand::Add(Box::new(parsed(&mut self.sp_add, rest)?))),
            ("sp", "remove") => Command::Sp(SpCommand::Remove(parsed(&mut self.sp_remove, rest)?)),
            _ => return None,
        })
    }
}

/// One command line as a change, or the message (and exit code) saying why not.
fn parse_line(parsers: &mut Parsers, line: &str) -> Result<Change, (String, u8)> {
    let mut words = shlex::split(line)
        .ok_or_else(|| ("unbalanced quotes or a trailing backslash".to_owned(), 2))?;
    if words.first().map(String::as_str) == Some("xipsec") {
        words.remove(0);
    }
    let argv = std::iter::once(OsString::from("xipsec")).chain(words.into_iter().map(Into::into));
    let argv = normalize_args(argv);
    if argv
        .iter()
        .any(|a| a.to_str().is_some_and(|a| a.starts_with("--socket")))
    {
        return Err(("--socket is not allowed in a batch file".to_owned(), 2));
    }
    let command = match parsers.change(&argv) {
        Some(command) => command,
        None => {
            parsers
                .full
                .try_get_matches_from_mut(argv)
                .and_then(|matches| Cli::from_arg_matches(&matches))
                .map_err(|e| (one_line(&e.render().to_string()), 2))?
                .command
        }
    };
    let only = |what: &str| {
        Err((
            format!(
                "{what} cannot be in a batch; only sa add, sa remove, sp add and sp remove can"
            ),
            2,
        ))
    };
    match command {
        Command::Sa(SaCommand::Add(a)) => Ok(Change::SaAdd((*a).into())),
        Command::Sa(SaCommand::Remove(a)) => Ok(Change::SaRemove(a.into())),
        Command::Sp(SpCommand::Add(a)) => Ok(super::ike::sp_add_change(*a)),
        Command::Sp(SpCommand::Remove(a)) => match &a.sa_name {
            Some(name) => Err((
                format!(
                    "sp remove takes --sp-name, not --sa-name (did you mean 'sp remove --sp-name {name}'?)"
                ),
                2,
            )),
            None => Ok(Change::SpRemove(a.into())),
        },
        Command::Add(m) => Err((misplaced("add", &m).message, 2)),
        Command::Remove(m) => Err((misplaced("remove", &m).message, 2)),
        Command::List(m) => Err((misplaced("list", &m).message, 2)),
        Command::Sa(SaCommand::List(_)) => only("sa list"),
        Command::Sa(SaCommand::ResetReplay(_)) => only("sa reset-replay"),
        Command::Sp(SpCommand::List(_)) => only("sp list"),
        Command::Stats(_) => only("stats"),
        Command::Status(_) => only("status"),
        Command::Daemon(_) => only("daemon"),
        Command::Completions { .. } => only("completions"),
        Command::Batch(_) => only("batch"),
        Command::Apply(_) => only("apply"),
        Command::Export(_) => only("export"),
        Command::Sa(SaCommand::Export(_)) => only("sa export"),
        Command::Explain(_) => only("explain"),
        Command::Generate(_) => only("generate"),
        Command::Ike(c) => super::ike::batch_change(c).or_else(|what| only(&what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpAddArgs, SpRemoveArgs};

    #[test]
    fn lines_parse_as_the_single_commands_do() {
        let text = "\
# a comment, then a blank line

sp add --sp-source=2001:db8:1::/64 --sp-destination 2002:db8:1::/64 --source-port=23 --destination-port=25 --flow-direction out --sa-name 'sa 1' --sp-name sp1
   esxcli network ip ipsec sp remove --sp-name sp1
xipsec sa remove --remove-all   # trailing comment
";
        let items = parse(text).expect("a valid batch file");
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].line, Some(3));
        assert_eq!(
            items[0].change,
            Change::SpAdd(SpAddArgs {
                sp_source: Some("2001:db8:1::/64".into()),
                sp_destination: Some("2002:db8:1::/64".into()),
                source_port: Some("23".into()),
                destination_port: Some("25".into()),
                flow_direction: Some("out".into()),
                sa_name: Some("sa 1".into()),
                sp_name: Some("sp1".into()),
                ..SpAddArgs::default()
            })
        );
        assert_eq!(
            items[1],
            BatchItem {
                line: Some(4),
                change: Change::SpRemove(SpRemoveArgs {
                    sp_name: Some("sp1".into()),
                    remove_all: false,
                }),
            }
        );
        assert!(matches!(&items[2].change, Change::SaRemove(a) if a.remove_all));
    }

    #[test]
    fn a_bad_line_is_named_with_its_option() {
        let err = |text: &str| parse(text).expect_err("a bad line").message;
        let unknown = err("sa remove --remove-all\n\n# c\nsa add --spi 0x100\n");
        assert!(
            unknown.starts_with("line 4 (item 2): unexpected argument '--spi' found"),
            "{unknown}"
        );
        assert!(!unknown.contains('\n'), "{unknown}");
        assert_eq!(
            err("sp list\n"),
            "line 1 (item 1): sp list cannot be in a batch; only sa add, sa remove, sp add and \
             sp remove can"
        );
        assert_eq!(
            err("sp remove --sa-name x\n"),
            "line 1 (item 1): sp remove takes --sp-name, not --sa-name (did you mean 'sp remove \
             --sp-name x'?)"
        );
        assert!(err("sa add --sa-name 'x\n").contains("unbalanced quotes"));
        assert!(err("sa list --socket /x\n").contains("--socket is not allowed"));
        assert!(err("add --sp-name x\n").contains("did you mean 'xipsec sp add'?"));
    }
}

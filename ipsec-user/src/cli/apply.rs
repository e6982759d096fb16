//! `xipsec apply FILE`: make the running configuration the one a file describes.
//!
//! Contract:
//! - FILE (or `-`, standard input) is read like a batch file (`cli::batch`: the single
//!   commands' clap definitions, `#` comments, a pasted `esxcli network ip ipsec` prefix), but
//!   holds only `sa add` and `sp add` lines: the whole desired set of user-owned SAs and SPs.
//!   A line that does not parse fails before the daemon is asked, as in a batch.
//! - The daemon computes the difference from the running configuration and commits it as one
//!   batch (`daemon::apply`): all or nothing, errors naming the line, the item and the option.
//!   The diff and the commit run in the daemon's one state worker, so no other change can slip
//!   in between them; `--expect-generation` additionally pins the generation a reviewed
//!   `--dry-run` reported.
//! - Output (stdout): a summary line, then one line per SA or SP that differs (`+` added, `-`
//!   removed, `~` changed with the options that differ, keys named but never shown). With no
//!   difference, one line saying so; nothing changes and the generation stays.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{Failure, call_within, unexpected};
use crate::daemon::protocol::{Apply, ApplyReport, DifferenceKind, Request, Response};

/// `xipsec apply --help`: what it does.
pub const LONG_ABOUT: &str = "Make the running SAs and SPs exactly those FILE describes.\n\n\
    FILE holds `sa add` and `sp add` lines as typed at the shell (a leading `xipsec` or a \
    pasted `esxcli network ip ipsec` is accepted; blank lines and `#` comments are skipped; `-` \
    reads standard input): the whole desired configuration. What the file leaves out is \
    removed, so `remove` lines are refused.\n\n\
    The daemon compares the file with what runs (every option, keys included, by name) and \
    applies the difference as one batch: packets see the old configuration or the new one, \
    never a mix, and an SA or SP that changes is replaced without a moment in which it is \
    missing. Objects that do not change are left alone (their counters keep counting). If \
    any line is refused, nothing changes and the error names the line and the option.\n\n\
    Keys printed as REDACTED by `xipsec export` keep the running key of an SA that the file \
    leaves otherwise unchanged; anywhere else they are refused.\n\n\
    An SA that changes takes its policies with it: they are removed and added again in the \
    same batch (shown as re-added). Added, changed and re-added policies are younger than \
    those left in place, which matters only between equally specific policies without \
    --priority.";

/// `xipsec apply --help`: an example.
pub const EXAMPLE: &str = "Example:\n  \
    $ xipsec export > site.conf          # keys shown as REDACTED\n  \
    $ $EDITOR site.conf                  # change a policy, add one\n  \
    $ xipsec apply --dry-run site.conf\n  \
    dry run at generation 7: 1 to add, 0 to remove, 1 to change\n  \
    ~ sp to-b: destination-port\n  \
    + sp to-c\n  \
    $ xipsec apply site.conf --expect-generation 7\n  \
    generation 8: 1 added, 0 removed, 1 changed";

/// `xipsec apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// File of `sa add`/`sp add` lines: the whole configuration; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the difference and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse, changing nothing, unless the configuration is still at generation N (the one a
    /// --dry-run printed).
    #[arg(long, value_name = "N")]
    pub expect_generation: Option<u64>,
}

/// Run `xipsec apply`.
pub(super) fn run(socket: &Path, args: &ApplyArgs) -> Result<(), Failure> {
    let text = super::batch::read(&args.file)?;
    let items = super::batch::parse(&text)?;
    let request = Request::Apply(Apply {
        expect_generation: args.expect_generation,
        dry_run: args.dry_run,
        items,
    });
    match call_within(socket, &request, super::client::BATCH_TIMEOUT)? {
        Response::Applied(report) => super::print(&render(&report)),
        other => Err(unexpected(&other)),
    }
}

/// What `apply` prints for `report`; see the module docs.
pub fn render(report: &ApplyReport) -> String {
    let count =
        |f: fn(&DifferenceKind) -> bool| report.differences.iter().filter(|d| f(&d.change)).count();
    let added = count(|c| matches!(c, DifferenceKind::Added));
    let removed = count(|c| matches!(c, DifferenceKind::Removed));
    let changed = report.differences.len() - added - removed;
    let mut text = if report.differences.is_empty() {
        format!(
            "no difference at generation {}: nothing to do\n",
            report.generation
        )
    } else if report.dry_run {
        format!(
            "dry run at generation {}: {added} to add, {removed} to remove, {changed} to change\n",
            report.generation
        )
    } else {
        format!(
            "generation {}: {added} added, {removed} removed, {changed} changed\n",
            report.generation
        )
    };
    for d in &report.differences {
        let line = match &d.change {
            DifferenceKind::Added => format!("+ {} {}", d.kind, d.name),
            DifferenceKind::Removed => format!("- {} {}", d.kind, d.name),
            DifferenceKind::Changed { fields } => {
                format!("~ {} {}: {}", d.kind, d.name, fields.join(", "))
            }
            DifferenceKind::Readded { sa } => {
                format!("~ {} {}: re-added (its sa {sa} changes)", d.kind, d.name)
            }
        };
        text.push_str(&line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::protocol::Difference;

    #[test]
    fn the_report_names_objects_and_fields() {
        let diff = |kind: &str, name: &str, change| Difference {
            kind: kind.into(),
            name: name.into(),
            change,
        };
        let report = ApplyReport {
            dry_run: true,
            generation: 4,
            differences: vec![
                diff("sa", "a", DifferenceKind::Added),
                diff(
                    "sa",
                    "b",
                    DifferenceKind::Changed {
                        fields: vec!["sa-spi".into(), "encryption-key".into()],
                    },
                ),
                diff("sp", "p", DifferenceKind::Readded { sa: "b".into() }),
                diff("sp", "q", DifferenceKind::Removed),
            ],
        };
        assert_eq!(
            render(&report),
            "dry run at generation 4: 1 to add, 1 to remove, 2 to change\n+ sa a\n~ sa b: \
             sa-spi, encryption-key\n~ sp p: re-added (its sa b changes)\n- sp q\n"
        );
        let none = ApplyReport {
            dry_run: false,
            generation: 9,
            differences: Vec::new(),
        };
        assert_eq!(
            render(&none),
            "no difference at generation 9: nothing to do\n"
        );
    }
}

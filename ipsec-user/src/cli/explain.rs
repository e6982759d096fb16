//! `xipsec explain`: what the kernel's classifier does with one packet, and why.
//!
//! The options go to the daemon raw ([`ExplainArgs`]); it builds the packet, runs it through the
//! kernel's explain program (`BPF_PROG_TEST_RUN`, changing nothing) and the reference model, and
//! answers both. Printed with `--formatter` like the lists; a disagreement is printed as a bug
//! on stderr and the command fails (exit 3), so scripts and tests notice.

use std::io::Write as _;
use std::path::Path;

use clap::Args;

use super::args::OutputArgs;
use super::{Failure, call, format, unexpected};
use crate::daemon::protocol::{ExplainArgs, Request, Response};

/// Shown after `xipsec explain --help`.
pub const EXAMPLE: &str = "Example:\n  xipsec explain --direction out --source 2001:db8::1 \
    --destination 2001:db8::2 --protocol tcp --destination-port 22\n\n\
    The protocol defaults to tcp and ports to 0; with icmp6, --destination-port is the ICMPv6 \
    type (default 128, echo request). Exit status 3 when the kernel and the reference model \
    disagree (a bug: please report it with the output).";

/// `xipsec explain` options.
#[derive(Debug, Args)]
pub struct ExplainCommand {
    /// `in` (XDP ingress's view) or `out` (TC egress's view).
    #[arg(long, value_name = "in|out")]
    pub direction: String,
    /// Source IPv6 address of the packet.
    #[arg(long, value_name = "ADDRESS")]
    pub source: String,
    /// Destination IPv6 address of the packet.
    #[arg(long, value_name = "ADDRESS")]
    pub destination: String,
    /// tcp (default), udp, icmp6 or a protocol number.
    #[arg(long, value_name = "PROTOCOL")]
    pub protocol: Option<String>,
    /// TCP or UDP source port (default 0).
    #[arg(long, value_name = "PORT")]
    pub source_port: Option<String>,
    /// TCP or UDP destination port (default 0), or the ICMPv6 type with icmp6 (default 128).
    #[arg(long, value_name = "PORT")]
    pub destination_port: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Exit status of a disagreement between the kernel and the reference model.
const DISAGREEMENT: u8 = 3;

/// Runs `xipsec explain` against the daemon at `socket`.
pub fn run(socket: &Path, command: &ExplainCommand) -> Result<(), Failure> {
    let request = Request::Explain(ExplainArgs {
        direction: Some(command.direction.clone()),
        source: Some(command.source.clone()),
        destination: Some(command.destination.clone()),
        protocol: command.protocol.clone(),
        source_port: command.source_port.clone(),
        destination_port: command.destination_port.clone(),
    });
    let report = match call(socket, &request)? {
        Response::Explained(report) => report,
        other => return Err(unexpected(&other)),
    };
    let text = format::render(
        command.output.formatter,
        &format::EXPLAIN_LAYOUT,
        &[format::explain_row(&report)],
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    if report.agree {
        return Ok(());
    }
    Err(Failure {
        message: format!(
            "BUG: the kernel's classifier and the reference model disagree about {} \
             (direction {}): kernel {:?}, reference {:?}",
            report.packet, report.direction, report.kernel, report.reference
        ),
        code: DISAGREEMENT,
    })
}

//! The CLI's side of the control protocol: one request, one response, with a timeout.
//!
//! Blocking std I/O: a command sends one request and exits, so it needs no async runtime.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon::protocol::{MAX_LINE, Request, Response};

/// How long a command waits for the daemon. Generous: a change waits its turn behind others and
/// includes a datapath sync and an fsync.
pub const TIMEOUT: Duration = Duration::from_mins(1);

/// How long `xipsec batch` waits: a batch of every policy the datapath holds is checked,
/// synced and written in one go.
pub const BATCH_TIMEOUT: Duration = Duration::from_mins(10);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no xipsec daemon answers on {} (start one with: xipsec daemon --interface IFACE)",
        socket.display()
    )]
    NoDaemon { socket: PathBuf },
    #[error("permission denied on {} (the control socket is root-only: run as root)", socket.display())]
    PermissionDenied { socket: PathBuf },
    #[error("the xipsec daemon on {} did not answer within {seconds} s", socket.display())]
    Timeout { socket: PathBuf, seconds: u64 },
    #[error("talking to the xipsec daemon on {}: {call}", socket.display())]
    Io {
        socket: PathBuf,
        call: &'static str,
        #[source]
        source: io::Error,
    },
    /// The daemon went away mid-request: whether a change was applied is unknown.
    #[error(
        "the xipsec daemon on {} closed the connection before answering; see list for whether the change was applied",
        socket.display()
    )]
    Closed { socket: PathBuf },
    #[error("the xipsec daemon on {} sent an answer this xipsec cannot read: {reason}", socket.display())]
    Protocol { socket: PathBuf, reason: String },
}

/// Send `request` to the daemon on `socket` and return its response.
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    call_within(socket, request, TIMEOUT)
}

/// [`call`], waiting up to `timeout` for each read and write.
pub fn call_within(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let owned = || socket.to_owned();
    let io_error = |call: &'static str| {
        move |source: io::Error| match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                socket: owned(),
                seconds: timeout.as_secs(),
            },
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                ClientError::Closed { socket: owned() }
            }
            _ => ClientError::Io {
                socket: owned(),
                call,
                source,
            },
        }
    };
    let stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
        // Nothing there, or a socket left behind by a daemon that is gone.
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::NoDaemon { socket: owned() }
        }
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { socket: owned() },
        _ => ClientError::Io {
            socket: owned(),
            call: "connect",
            source,
        },
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(io_error("setsockopt"))?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol {
        socket: owned(),
        reason: e.to_string(),
    })?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io_error("write"))?;
    let mut reader = BufReader::new((&stream).take(MAX_LINE as u64 + 1));
    let mut answer = Vec::new();
    reader
        .read_until(b'\n', &mut answer)
        .map_err(io_error("read"))?;
    if answer.last() != Some(&b'\n') {
        return Err(ClientError::Closed { socket: owned() });
    }
    serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol {
        socket: owned(),
        reason: e.to_string(),
    })
}

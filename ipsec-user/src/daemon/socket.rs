//! The control socket: safe binding, and one task per client connection.
//!
//! Binding never steals a live daemon's socket: a socket file is removed only when nothing
//! answers on it (left behind by a daemon that died), and never if the path is not a socket.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use super::control::Control;
use super::protocol::{MAX_LINE, Request, Response};

/// Fail if a daemon answers on `path`; leave a stale or missing socket for [`bind`].
pub(crate) fn refuse_if_answered(path: &Path) -> anyhow::Result<()> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "another xipsec daemon answers on {}; stop it or choose another --socket",
            path.display()
        ),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(())
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot probe the control socket {}", path.display()))
        }
    }
}

/// A bound control socket, remembered by inode so shutdown removes only our own file.
pub(crate) struct Listener {
    listener: UnixListener,
    path: PathBuf,
    ino: (u64, u64),
}

impl Listener {
    /// Remove the socket file if it is still the one we bound.
    pub(crate) fn remove(&self) -> io::Result<()> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.ino => std::fs::remove_file(&self.path),
            _ => Ok(()),
        }
    }
}

/// Bind `path` with mode 0600, creating its parent and replacing a stale socket.
pub(crate) fn bind(path: &Path) -> anyhow::Result<Listener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("cannot create the socket directory {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // Checked again right before removal: the probe at start-up may be long past.
            refuse_if_answered(path)?;
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; move it away or choose another --socket",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    }
    // The socket is root-only from its first moment: bind under a umask that leaves 0600, rather
    // than chmod after a window in which anyone could connect.
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?;
    Ok(Listener {
        listener,
        path: path.to_owned(),
        ino: (meta.dev(), meta.ino()),
    })
}

/// Accept clients until `shutdown` completes.
pub(crate) async fn accept_until(
    listener: &Listener,
    control: Control,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_client(stream, control.clone()));
                }
                // Running out of descriptors is transient; keep serving the clients we have.
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Answer one request line at a time until the client hangs up.
async fn serve_client(stream: UnixStream, control: Control) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "client read failed");
                return;
            }
        }
        let response = if line.len() > MAX_LINE {
            Response::Error {
                message: format!("request longer than {MAX_LINE} bytes"),
            }
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(request) => control.handle(request).await,
                Err(e) => Response::Error {
                    message: format!(
                        "malformed request (is the CLI the same version as the daemon?): {e}"
                    ),
                },
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|e| {
            format!("{{\"error\":{{\"message\":\"cannot encode the response: {e}\"}}}}")
                .into_bytes()
        });
        out.push(b'\n');
        if let Err(e) = write.write_all(&out).await {
            debug!(error = %e, "client write failed");
            return;
        }
        if line.len() > MAX_LINE || line.last() != Some(&b'\n') {
            return;
        }
    }
}

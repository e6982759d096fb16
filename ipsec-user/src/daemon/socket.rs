//! The control socket: safe binding, who may connect, and one bounded task per client.
//!
//! Contract:
//! - Binding never steals a live daemon's socket: a socket file is removed only when nothing
//!   answers on it (left behind by a daemon that died), and never if the path is not a socket.
//!   The socket is mode 0600 from its first moment.
//! - Every connection's peer is checked with `SO_PEERCRED` (and `SO_PEERGROUPS`) before anything
//!   is read: only uid 0 and, when [`ControlLimits::group`] is set, members of that group are
//!   served. File permissions are the first fence; this check holds even if the socket's mode or
//!   owner is changed, or the descriptor is passed to another process.
//! - Resources per client are bounded: a request line is at most [`ControlLimits::max_request`]
//!   bytes ([`MAX_REQUEST`], 1 MiB), or [`ControlLimits::max_batch_request`]
//!   ([`MAX_BATCH_REQUEST`], 256 MiB) for a line that starts with the batch tag
//!   (`protocol::BATCH_TAG`) or the apply tag (`protocol::APPLY_TAG`), at most [`ControlLimits::max_connections`] clients are
//!   served at once ([`MAX_CONNECTIONS`]), and a connection with no complete request for
//!   [`ControlLimits::idle_timeout`] ([`IDLE_TIMEOUT`]) is closed, as is one that does not read
//!   its answer within that time.
//! - A request that answers with keys (`Request::needs_root`) is refused to anyone but uid 0,
//!   also to members of the control group.
//! - A refused client gets one [`Response::Error`] line saying why, the daemon logs a warning,
//!   and nothing changes. The refused connection is read (and discarded) briefly before it is
//!   closed, so a client that writes its request before reading still gets the error line
//!   instead of a broken pipe.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::control::Control;
use super::protocol::{APPLY_TAG, BATCH_TAG, MAX_LINE, Request, Response};
use crate::model::MAX_SP;

/// Longest request line the daemon reads: 1 MiB. Every request today is one SA or SP (well under
/// 1 KiB), so this only stops a confused or hostile peer from making the daemon buffer without
/// bound. Responses are bounded separately (`protocol::MAX_LINE`): a listing can be large.
pub const MAX_REQUEST: usize = 1 << 20;

/// Bytes a batch request may spend per policy: the JSON of the largest valid `sp add` (names of
/// `MAX_NAME_LEN`, the longest address and prefix spellings) is well under this (tested below).
pub const BATCH_BYTES_PER_SP: usize = 1024;

/// Longest batch-of-changes request line: as large as [`MAX_SP`] policies need and no larger
/// (256 MiB). Allowed only for a line that starts with the batch tag; every other request keeps
/// [`MAX_REQUEST`].
pub const MAX_BATCH_REQUEST: usize = MAX_SP as usize * BATCH_BYTES_PER_SP;

// A batch is larger than any other request, and its answer line still fits the client's limit.
const _: () = assert!(MAX_REQUEST < MAX_BATCH_REQUEST && MAX_BATCH_REQUEST <= MAX_LINE);

/// Clients served at once; the next one is refused with an error line.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may go without a complete request (or without reading its answer)
/// before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a refused connection is read and discarded before it is closed (see the contract).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Refused connections lingered on at once; beyond this they are closed right after the error
/// line, so a flood of refused connections costs no more than this many tasks.
const MAX_LINGERING: usize = 64;

/// Who may use the control socket, and the per-client bounds. The default serves uid 0 only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlLimits {
    /// Longest request line, in bytes.
    pub max_request: usize,
    /// Longest batch request line (one starting with the batch tag), in bytes.
    pub max_batch_request: usize,
    /// Clients served at once.
    pub max_connections: usize,
    /// Longest wait for a complete request, or for the client to take its answer.
    pub idle_timeout: Duration,
    /// A group whose members may use the socket besides uid 0 (`--control-group`); `None`
    /// serves root only.
    pub group: Option<ControlGroup>,
}

impl Default for ControlLimits {
    fn default() -> Self {
        Self {
            max_request: MAX_REQUEST,
            max_batch_request: MAX_BATCH_REQUEST,
            max_connections: MAX_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
            group: None,
        }
    }
}

/// A group allowed on the control socket, by name (for messages) and gid (for the check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlGroup {
    pub name: String,
    pub gid: u32,
}

/// Why a `--control-group` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("--control-group {name}: no such group")]
    Unknown { name: String },
    #[error("--control-group {name}: getgrnam_r failed")]
    Lookup {
        name: String,
        #[source]
        source: io::Error,
    },
}

impl ControlGroup {
    /// Looks `name` up in the group database (`getgrnam_r`, so NSS sources count too).
    ///
    /// # Errors
    /// [`GroupError::Unknown`] when there is no such group, [`GroupError::Lookup`] when the
    /// database cannot be read.
    pub fn lookup(name: &str) -> Result<Self, GroupError> {
        let lookup = |source| GroupError::Lookup {
            name: name.to_owned(),
            source,
        };
        let c_name = std::ffi::CString::new(name).map_err(|_| GroupError::Unknown {
            name: name.to_owned(),
        })?;
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: an all-zero `group` is a valid value of this plain C struct.
            let mut group: libc::group = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::group = std::ptr::null_mut();
            // SAFETY: every pointer is valid for the call: `c_name` is NUL-terminated, `group`
            // and `found` are live locals, and `buf` is writable for `buf.len()` bytes.
            let rc = unsafe {
                libc::getgrnam_r(
                    c_name.as_ptr(),
                    &raw mut group,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &raw mut found,
                )
            };
            if rc == libc::ERANGE && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            if rc != 0 {
                return Err(lookup(io::Error::from_raw_os_error(rc)));
            }
            if found.is_null() {
                return Err(GroupError::Unknown {
                    name: name.to_owned(),
                });
            }
            return Ok(Self {
                name: name.to_owned(),
                gid: group.gr_gid,
            });
        }
    }
}

/// The credentials of a connected client, as the kernel recorded them at `connect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pid: Option<i32>,
    /// Supplementary groups (`SO_PEERGROUPS`).
    pub(crate) groups: Vec<u32>,
}

impl Peer {
    /// Reads the peer's credentials from the kernel (`SO_PEERCRED`, `SO_PEERGROUPS`).
    fn of(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups: peer_groups(stream)?,
        })
    }
}

/// `getsockopt(SO_PEERGROUPS)`: the supplementary groups the peer had at `connect` (Linux 4.13).
fn peer_groups(stream: &impl AsRawFd) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?;
        // SAFETY: `groups` is writable for `len` bytes, and `len` is a live local the kernel
        // overwrites with the length it wrote (or needs, on ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let count = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ERANGE) && count > groups.len() {
            groups.resize(count, 0);
            continue;
        }
        return Err(error);
    }
}

impl ControlLimits {
    /// Whether `peer` may use the socket: uid 0, or a member (primary or supplementary) of
    /// [`Self::group`].
    pub(crate) fn allows(&self, peer: &Peer) -> bool {
        peer.uid == 0
            || self
                .group
                .as_ref()
                .is_some_and(|g| peer.gid == g.gid || peer.groups.contains(&g.gid))
    }

    /// The error line for a peer [`Self::allows`] refuses.
    fn refusal(&self, peer: &Peer) -> String {
        let who = match &self.group {
            None => "root only (uid 0)".to_owned(),
            Some(g) => format!(
                "root (uid 0) and members of group {} (gid {})",
                g.name, g.gid
            ),
        };
        format!(
            "permission denied: this xipsec daemon's control socket serves {who}, not uid {} \
             (gid {}); run as root, or start the daemon with --control-group naming one of your \
             groups",
            peer.uid, peer.gid
        )
    }
}
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
    socket: UnixListener,
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
        socket: listener,
        path: path.to_owned(),
        ino: (meta.dev(), meta.ino()),
    })
}

/// Accept clients under `limits` until `shutdown` completes; see the module contract.
pub(crate) async fn serve_clients(
    listener: &Listener,
    control: Control,
    limits: &ControlLimits,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.socket.accept() => match accepted {
                Ok((stream, _)) => admit(stream, &control, limits, &slots, &lingering),
                // Running out of descriptors is transient; keep serving the clients we have.
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Check a new connection's peer and take a slot for it, or refuse it.
fn admit(
    stream: UnixStream,
    control: &Control,
    limits: &ControlLimits,
    slots: &Arc<Semaphore>,
    lingering: &Arc<Semaphore>,
) {
    let peer = match Peer::of(&stream) {
        Ok(peer) => peer,
        Err(e) => {
            warn!(error = %e, "control connection refused: cannot read the peer's credentials");
            let message = format!("cannot read your credentials (SO_PEERCRED): {e}");
            refuse(stream, &message, limits, lingering);
            return;
        }
    };
    if !limits.allows(&peer) {
        warn!(
            uid = peer.uid, gid = peer.gid, pid = ?peer.pid,
            "control connection refused: peer is neither root nor in the control group"
        );
        refuse(stream, &limits.refusal(&peer), limits, lingering);
        return;
    }
    let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
        warn!(
            uid = peer.uid, pid = ?peer.pid, max = limits.max_connections,
            "control connection refused: too many connections"
        );
        let message = format!(
            "too many control connections ({} at once); try again when another command has \
             finished",
            limits.max_connections
        );
        refuse(stream, &message, limits, lingering);
        return;
    };
    tokio::spawn(serve_client(
        stream,
        control.clone(),
        limits.clone(),
        slot,
        peer.uid,
    ));
}

/// One response line, `\n`-terminated.
fn encode(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).unwrap_or_else(|e| {
        format!("{{\"error\":{{\"message\":\"cannot encode the response: {e}\"}}}}").into_bytes()
    });
    out.push(b'\n');
    out
}

/// Send `message` as an error line without waiting, then read and discard what the client
/// sends for a moment (so its request write does not fail with a broken pipe before it reads
/// the error) and close. Nothing the client sends is acted on.
fn refuse(stream: UnixStream, message: &str, limits: &ControlLimits, lingering: &Arc<Semaphore>) {
    let line = encode(&Response::Error {
        message: message.to_owned(),
    });
    // A fresh connection's send buffer is empty and the line is short, so this writes it
    // whole; a client that cannot take even that gets nothing, which is fine for a refusal.
    let _ = stream.try_write(&line);
    let Ok(permit) = Arc::clone(lingering).try_acquire_owned() else {
        return;
    };
    let limit = limits.max_request;
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, discard_line(&mut stream, limit)).await;
    });
}

/// Read and drop bytes until a newline, end of stream, an error or `limit` bytes.
async fn discard_line(reader: &mut (impl AsyncRead + Unpin), limit: usize) {
    let mut scratch = [0u8; 4096];
    let mut total = 0;
    while total <= limit {
        match reader.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(n) if scratch[..n].contains(&b'\n') => return,
            Ok(n) => total += n,
        }
    }
}

/// The longest `line` may be: the batch limit if it starts with the batch tag.
fn line_limit(line: &[u8], limits: &ControlLimits) -> usize {
    if line.starts_with(BATCH_TAG) || line.starts_with(APPLY_TAG) {
        limits.max_batch_request.max(limits.max_request)
    } else {
        limits.max_request
    }
}

/// Read one request line into `line`: up to [`ControlLimits::max_request`] bytes, and on to
/// the batch limit only when what was read so far starts with the batch tag. A line longer than
/// its limit is returned cut at limit + 1 bytes. The number of bytes read (0 at end of stream).
async fn read_request(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    limits: &ControlLimits,
) -> io::Result<usize> {
    let mut total = (&mut *reader)
        .take(limits.max_request as u64 + 1)
        .read_until(b'\n', line)
        .await?;
    let limit = line_limit(line, limits);
    if line.last() != Some(&b'\n') && line.len() > limits.max_request && limit > line.len() {
        let more = (limit + 1 - line.len()) as u64;
        total += (&mut *reader).take(more).read_until(b'\n', line).await?;
    }
    Ok(total)
}

/// Parse a request line; a large one (a batch) off the async threads. The line's buffer comes
/// back for reuse.
async fn parse_request(line: Vec<u8>) -> (Result<Request, serde_json::Error>, Vec<u8>) {
    if line.len() <= MAX_REQUEST {
        return (serde_json::from_slice::<Request>(&line), line);
    }
    match tokio::task::spawn_blocking(move || (serde_json::from_slice::<Request>(&line), line))
        .await
    {
        Ok(parsed) => parsed,
        Err(e) => (
            Err(serde::de::Error::custom(format!(
                "the parser task failed: {e}"
            ))),
            Vec::new(),
        ),
    }
}

/// Answer one request line at a time until the client hangs up, goes idle or oversteps a limit.
/// `_slot` is this connection's share of [`ControlLimits::max_connections`], released on return.
async fn serve_client(
    stream: UnixStream,
    control: Control,
    limits: ControlLimits,
    _slot: OwnedSemaphorePermit,
    uid: u32,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(
            limits.idle_timeout,
            read_request(&mut reader, &mut line, &limits),
        )
        .await;
        match read {
            Err(_) => {
                info!(
                    timeout_s = limits.idle_timeout.as_secs_f64(),
                    "closing an idle control connection"
                );
                let message = format!(
                    "no complete request within {} s: closing the connection",
                    limits.idle_timeout.as_secs_f64()
                );
                let _ = write.try_write(&encode(&Response::Error { message }));
                return;
            }
            Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "client read failed");
                return;
            }
        }
        let limit = line_limit(&line, &limits);
        let oversize = line.len() > limit;
        let response = if oversize {
            warn!(limit, "control request refused: longer than the limit");
            Response::Error {
                message: format!("request longer than {limit} bytes refused; nothing changed"),
            }
        } else {
            match parse_request(std::mem::take(&mut line)).await {
                (Ok(request), back) if request.needs_root() && uid != 0 => {
                    line = back;
                    warn!(uid, "control request refused: keys are for root only");
                    Response::Error {
                        message: format!(
                            "permission denied: only root (uid 0) may read keys, not uid {uid}"
                        ),
                    }
                }
                (Ok(request), back) => {
                    line = back;
                    control.handle(request).await
                }
                (Err(e), back) => {
                    line = back;
                    Response::Error {
                        message: format!(
                            "malformed request (is the CLI the same version as the daemon?): {e}"
                        ),
                    }
                }
            }
        };
        let out = encode(&response);
        match tokio::time::timeout(limits.idle_timeout, write.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "client write failed");
                return;
            }
            Err(_) => {
                info!("closing a control connection that does not read its answer");
                return;
            }
        }
        if oversize {
            // Let the client finish writing the rest of its line (bounded in time and size), so
            // it reads the error instead of failing on a broken pipe.
            let drain = discard_line(&mut reader, MAX_LINE);
            let _ = tokio::time::timeout(limits.idle_timeout, drain).await;
            return;
        }
        if line.last() != Some(&b'\n') {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::NoDatapath;
    use crate::daemon::control::{self, Identity};
    use crate::daemon::state::StateStore;
    use crate::model::{MAX_NAME_LEN, SpAddArgs};

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: Some(1234),
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_only_by_default_and_group_members_when_configured() {
        let root_only = ControlLimits::default();
        assert!(root_only.allows(&peer(0, 0, &[])));
        assert!(root_only.allows(&peer(0, 100, &[100])));
        assert!(
            !root_only.allows(&peer(1000, 0, &[0])),
            "gid 0 is not uid 0"
        );
        assert!(!root_only.allows(&peer(65534, 65534, &[])));
        let with_group = ControlLimits {
            group: Some(ControlGroup {
                name: "xipsec".to_owned(),
                gid: 990,
            }),
            ..ControlLimits::default()
        };
        assert!(with_group.allows(&peer(0, 0, &[])));
        assert!(with_group.allows(&peer(1000, 990, &[])), "primary group");
        assert!(
            with_group.allows(&peer(1000, 1000, &[4, 990])),
            "supplementary"
        );
        assert!(!with_group.allows(&peer(1000, 1000, &[4, 991])));
        let message = with_group.refusal(&peer(1000, 1000, &[]));
        assert!(
            message.contains("members of group xipsec (gid 990)") && message.contains("uid 1000"),
            "{message}"
        );
        let message = root_only.refusal(&peer(65534, 65534, &[]));
        assert!(message.starts_with("permission denied: "), "{message}");
        assert!(
            message.contains("root only (uid 0), not uid 65534"),
            "{message}"
        );
    }

    #[test]
    fn peer_groups_are_the_connecting_process_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("creating a socket pair");
        let mut got = peer_groups(&a).expect("getsockopt SO_PEERGROUPS");
        // SAFETY: getgroups with a zero-length buffer only returns the count.
        let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut want: Vec<libc::gid_t> = vec![0; usize::try_from(count).expect("group count")];
        // SAFETY: `want` is writable for `count` gids.
        let written = unsafe { libc::getgroups(count, want.as_mut_ptr()) };
        want.truncate(usize::try_from(written).expect("getgroups succeeded"));
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn groups_are_looked_up_by_name() {
        assert_eq!(
            ControlGroup::lookup("root").expect("looking up group root"),
            ControlGroup {
                name: "root".to_owned(),
                gid: 0
            }
        );
        let error = ControlGroup::lookup("no-such-group-xipsec").expect_err("unknown group");
        assert_eq!(
            error.to_string(),
            "--control-group no-such-group-xipsec: no such group"
        );
    }

    #[test]
    fn the_batch_budget_holds_the_largest_valid_policy() {
        let name = "n".repeat(MAX_NAME_LEN);
        let prefix = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128".to_owned();
        let largest = SpAddArgs {
            sp_source: Some(prefix.clone()),
            sp_destination: Some(prefix),
            source_port: Some("65535".to_owned()),
            destination_port: Some("65535".to_owned()),
            upper_layer_protocol: Some("icmp6".to_owned()),
            flow_direction: Some("out".to_owned()),
            action: Some("discard".to_owned()),
            sp_mode: Some("transport".to_owned()),
            sa_name: Some(name.clone()),
            sp_name: Some(name),
            priority: Some("65535".to_owned()),
        };
        let json = serde_json::to_vec(&Request::SpAdd(largest)).expect("encoding an sp add");
        // Room for the separator of a JSON array of them.
        assert!(json.len() + 1 < BATCH_BYTES_PER_SP, "{} bytes", json.len());
        assert_eq!(MAX_BATCH_REQUEST, 256 << 20);
        assert_eq!(MAX_REQUEST, 1 << 20);
        assert_eq!(MAX_CONNECTIONS, 64);
        assert_eq!(IDLE_TIMEOUT, Duration::from_secs(30));
    }

    /// A daemon's socket half (state worker without a datapath) under `limits`, in `dir`.
    struct Served {
        socket: PathBuf,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    fn serve_in(dir: &Path, limits: ControlLimits) -> Served {
        let socket = dir.join("s");
        let (store, saved) =
            StateStore::open(&dir.join("state")).expect("opening the state directory");
        let identity = Identity {
            socket: socket.display().to_string(),
            datapath: "none".to_owned(),
            interfaces: Vec::new(),
            xdp_mode: "auto".to_owned(),
            pin_dir: String::new(),
        };
        let (control, worker) = control::start(saved, Box::new(NoDatapath), store, identity)
            .expect("starting the state worker");
        let listener = bind(&socket).expect("binding the control socket");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_clients(&listener, control, &limits, stopped)
                .await
                .expect("serving clients");
            tokio::task::spawn_blocking(move || worker.stop())
                .await
                .expect("stopping the worker");
        });
        Served {
            socket,
            stop: Some(stop),
            task,
        }
    }

    impl Served {
        async fn shutdown(mut self) {
            let _ = self.stop.take().expect("not stopped yet").send(());
            self.task.await.expect("the server task");
        }
    }

    async fn read_to_end(stream: &mut UnixStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
            .await
            .expect("the daemon closes the connection")
            .expect("reading the connection");
        String::from_utf8(out).expect("responses are UTF-8")
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_with_an_error_line_and_others_are_served() {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let limits = ControlLimits {
            idle_timeout: Duration::from_millis(300),
            ..ControlLimits::default()
        };
        let served = serve_in(dir.path(), limits);
        let started = std::time::Instant::now();
        // Connects, then sends half a request and stalls.
        let mut idle = UnixStream::connect(&served.socket)
            .await
            .expect("connecting");
        idle.write_all(b"\"sta")
            .await
            .expect("writing half a request");
        // A client that keeps sending whole requests is served meanwhile.
        let mut busy = UnixStream::connect(&served.socket)
            .await
            .expect("connecting");
        busy.write_all(b"\"status\"\n")
            .await
            .expect("writing a request");
        let mut answer = String::new();
        BufReader::new(&mut busy)
            .read_line(&mut answer)
            .await
            .expect("reading the status answer");
        assert!(answer.starts_with("{\"status\":"), "{answer}");
        let closed = read_to_end(&mut idle).await;
        let waited = started.elapsed();
        assert_eq!(
            closed,
            "{\"error\":{\"message\":\"no complete request within 0.3 s: closing the connection\"}}\n"
        );
        assert!(
            waited >= Duration::from_millis(300),
            "closed after {waited:?}"
        );
        served.shutdown().await;
    }

    /// One request line on a fresh connection; the answer line.
    async fn exchange(socket: &Path, line: &[u8]) -> String {
        let mut stream = UnixStream::connect(socket).await.expect("connecting");
        stream.write_all(line).await.expect("writing a request");
        let mut answer = String::new();
        BufReader::new(&mut stream)
            .read_line(&mut answer)
            .await
            .expect("reading the answer");
        answer
    }

    #[tokio::test]
    async fn only_a_batch_line_may_exceed_the_request_limit() {
        use crate::daemon::protocol::{Batch, BatchItem, Change};
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let limits = ControlLimits {
            max_request: 1024,
            max_batch_request: 64 * 1024,
            ..ControlLimits::default()
        };
        let served = serve_in(dir.path(), limits);
        let batch = |n: usize| {
            let items = (0..n)
                .map(|i| BatchItem {
                    line: None,
                    change: Change::SpAdd(crate::daemon::batch::inbound_discard(
                        &format!("sp{i}"),
                        &format!("fd00:{i:x}::/64"),
                    )),
                })
                .collect();
            let mut line = serde_json::to_vec(&Request::Batch(Batch {
                expect_generation: None,
                items,
            }))
            .expect("encoding a batch");
            line.push(b'\n');
            line
        };
        let small = batch(40);
        assert!(small.len() > 4 * 1024, "{} bytes", small.len());
        let answer = exchange(&served.socket, &small).await;
        assert!(
            answer.starts_with("{\"batch_applied\":{\"generation\":1,\"added\":40,"),
            "{answer}"
        );
        // The same bytes without the tag first are held to the ordinary limit.
        let mut untagged = b" ".to_vec();
        untagged.extend_from_slice(&small);
        let answer = exchange(&served.socket, &untagged).await;
        assert!(
            answer.contains("request longer than 1024 bytes refused"),
            "{answer}"
        );
        // A batch over its own limit is refused too.
        let answer = exchange(&served.socket, &batch(1000)).await;
        assert!(
            answer.contains("request longer than 65536 bytes refused"),
            "{answer}"
        );
        assert!(
            exchange(&served.socket, b"\"status\"\n")
                .await
                .contains("\"generation\":1")
        );
        served.shutdown().await;
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused_until_a_slot_frees() {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let limits = ControlLimits {
            max_connections: 2,
            ..ControlLimits::default()
        };
        let served = serve_in(dir.path(), limits);
        let first = UnixStream::connect(&served.socket)
            .await
            .expect("connecting");
        let _second = UnixStream::connect(&served.socket)
            .await
            .expect("connecting");
        let mut third = UnixStream::connect(&served.socket)
            .await
            .expect("connecting");
        third
            .write_all(b"\"status\"\n")
            .await
            .expect("writing a request");
        assert_eq!(
            read_to_end(&mut third).await,
            "{\"error\":{\"message\":\"too many control connections (2 at once); try again when \
             another command has finished\"}}\n"
        );
        drop(first);
        // The slot comes back once the first connection's task sees the hang-up.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut next = UnixStream::connect(&served.socket)
                .await
                .expect("connecting");
            next.write_all(b"\"status\"\n")
                .await
                .expect("writing a request");
            let mut answer = String::new();
            BufReader::new(&mut next)
                .read_line(&mut answer)
                .await
                .expect("reading an answer");
            if answer.starts_with("{\"status\":") {
                break;
            }
            assert!(answer.contains("too many"), "{answer}");
            assert!(std::time::Instant::now() < deadline, "no slot came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served.shutdown().await;
    }

    /// `CI=true` requires root; elsewhere a test without it prints why and passes (the kit's
    /// rule, `xipsec_testkit::require_root`).
    fn root_or_skip(test: &str) -> bool {
        xipsec_testkit::require_root(test)
    }

    /// One `"status"` request from a python3 client run by `setpriv` with `creds`; its answer.
    /// A separate process, because `SO_PEERCRED` records the credentials of the process that
    /// called `connect`.
    async fn status_as(socket: &Path, creds: &[&str]) -> String {
        let script = "import socket, sys\n\
                      s = socket.socket(socket.AF_UNIX)\n\
                      s.connect(sys.argv[1])\n\
                      s.sendall(b'\"status\"\\n')\n\
                      sys.stdout.write(s.makefile().readline())\n";
        let output = tokio::process::Command::new("setpriv")
            .args(creds)
            // The system interpreter: a per-user one (pyenv) may be unreadable to uid 65534.
            .args(["/usr/bin/python3", "-c", script])
            .arg(socket)
            .output()
            .await
            .expect("running python3 under setpriv");
        assert!(output.status.success(), "client failed: {output:?}");
        String::from_utf8(output.stdout).expect("an answer in UTF-8")
    }

    #[tokio::test]
    async fn members_of_the_control_group_are_served_and_others_refused() {
        if !root_or_skip("members_of_the_control_group_are_served_and_others_refused") {
            return;
        }
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let limits = ControlLimits {
            group: Some(ControlGroup {
                name: "xipsec-test".to_owned(),
                gid: 4242,
            }),
            ..ControlLimits::default()
        };
        let served = serve_in(dir.path(), limits);
        // Open the file permissions so only the credential check decides.
        for (path, mode) in [(dir.path(), 0o711), (served.socket.as_path(), 0o666)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("opening the socket's permissions");
        }
        let primary = ["--reuid=65534", "--regid=4242", "--clear-groups"];
        let primary = status_as(&served.socket, &primary).await;
        assert!(
            primary.starts_with("{\"status\":"),
            "primary group: {primary}"
        );
        let nobody = ["--reuid=65534", "--regid=65534"];
        let creds = [nobody[0], nobody[1], "--groups=7,4242"];
        let supplementary = status_as(&served.socket, &creds).await;
        assert!(
            supplementary.starts_with("{\"status\":"),
            "supplementary group: {supplementary}"
        );
        let creds = [nobody[0], nobody[1], "--groups=4243"];
        let other = status_as(&served.socket, &creds).await;
        assert_eq!(
            other,
            "{\"error\":{\"message\":\"permission denied: this xipsec daemon's control socket \
             serves root (uid 0) and members of group xipsec-test (gid 4242), not uid 65534 (gid \
             65534); run as root, or start the daemon with --control-group naming one of your \
             groups\"}}\n"
        );
        served.shutdown().await;
    }
}

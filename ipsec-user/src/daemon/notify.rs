//! The service manager's readiness protocol (`sd_notify(3)`), spoken by the daemon itself.
//!
//! Contract:
//! - [`Notifier::from_env`] reads `$NOTIFY_SOCKET` once: a filesystem path (`/run/...`) or an
//!   abstract name (`@name`). Without it (not started by systemd with `Type=notify`) every
//!   notification is a no-op.
//! - Each notification is one datagram of `KEY=VALUE` lines on a Unix datagram socket, as
//!   `sd_notify(3)` sends it. A failed send is logged and otherwise ignored: the service manager
//!   then times the start out, which is the right outcome for a manager that cannot be told.
//! - The daemon sends `READY=1` only once its programs are attached, the restored state is in
//!   the maps and the control socket is listening (see `daemon::serve`), and `STOPPING=1` as
//!   soon as it starts shutting down.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

/// Why `$NOTIFY_SOCKET` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{NOTIFY_SOCKET_ENV}={value:?} is neither an absolute path nor an abstract @name")]
    BadAddress { value: String },
    #[error("cannot use {NOTIFY_SOCKET_ENV}={value:?}")]
    Address {
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot send {what:?} to {NOTIFY_SOCKET_ENV}")]
    Send {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`, or one that sends nothing when it is unset or empty.
    pub fn from_env() -> Result<Self, NotifyError> {
        match std::env::var(NOTIFY_SOCKET_ENV) {
            Ok(value) if !value.is_empty() => Self::to(&value),
            _ => Ok(Self { target: None }),
        }
    }

    /// A notifier for the socket `value` names (`/path` or `@abstract`).
    pub fn to(value: &str) -> Result<Self, NotifyError> {
        let address = |source| NotifyError::Address {
            value: value.to_owned(),
            source,
        };
        let target = if let Some(name) = value.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(address)?
        } else if value.starts_with('/') {
            SocketAddr::from_pathname(Path::new(value)).map_err(address)?
        } else {
            return Err(NotifyError::BadAddress {
                value: value.to_owned(),
            });
        };
        Ok(Self {
            target: Some(target),
        })
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Send `state` (newline-separated `KEY=VALUE` assignments) as one datagram.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let send = |source| NotifyError::Send {
            what: state.to_owned(),
            source,
        };
        let socket = UnixDatagram::unbound().map_err(send)?;
        socket
            .send_to_addr(state.as_bytes(), target)
            .map_err(send)?;
        Ok(())
    }

    /// `READY=1` with a one-line status for `systemctl status`.
    pub fn ready(&self, status: &str) {
        self.log_failure(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// `STOPPING=1`: the daemon is shutting down.
    pub fn stopping(&self) {
        self.log_failure("STOPPING=1\nSTATUS=stopping");
    }

    fn log_failure(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!(error = %crate::model::Chain(&e), "cannot notify the service manager");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("setting a timeout");
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("receiving a notification");
        String::from_utf8(buf[..n].to_vec()).expect("a text notification")
    }

    #[test]
    fn a_path_socket_gets_one_datagram_per_notification() {
        let dir = tempfile::tempdir().expect("creating a directory");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("binding the listener");
        let notifier = Notifier::to(path.to_str().expect("a utf-8 path")).expect("a notifier");
        assert!(notifier.enabled());
        notifier.ready("serving");
        let ready = receive(&listener);
        assert!(
            ready.starts_with("READY=1\nSTATUS=serving\nMAINPID="),
            "{ready}"
        );
        notifier.stopping();
        assert_eq!(receive(&listener), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn an_abstract_name_is_reached_without_a_file() {
        let name = format!("xipsec-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
        let listener = UnixDatagram::bind_addr(&address).expect("binding the listener");
        let notifier = Notifier::to(&format!("@{name}")).expect("a notifier");
        notifier.notify("READY=1").expect("sending");
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn no_socket_means_no_notification_and_bad_ones_are_named() {
        let none = Notifier { target: None };
        assert!(!none.enabled());
        none.notify("READY=1").expect("a no-op");
        let e = Notifier::to("relative/path").expect_err("a relative path is refused");
        assert_eq!(
            e.to_string(),
            "NOTIFY_SOCKET=\"relative/path\" is neither an absolute path nor an abstract @name"
        );
        // Nobody listens there: the send fails with a named error.
        let dir = tempfile::tempdir().expect("creating a directory");
        let gone =
            Notifier::to(dir.path().join("gone").to_str().expect("utf-8")).expect("a notifier");
        let e = gone.notify("READY=1").expect_err("nobody listens");
        assert!(e.to_string().starts_with("cannot send \"READY=1\""), "{e}");
    }
}

//! The xipsec daemon: owns the policy database, persists it, drives the datapath and serves the
//! CLI on a Unix socket.
//!
//! Contract of [`serve`]:
//! - It refuses to start if another daemon answers on the socket, or holds the state directory.
//! - It restores `{state_dir}/state.json` (refusing to start, and leaving the file alone, if it is
//!   corrupt) and syncs the datapath to it before it accepts any request.
//! - It then binds the socket (parent created, stale socket replaced, mode 0600) and answers
//!   [`protocol`] requests. Changes are serialised; an acknowledged change is in the datapath and
//!   on disk; a refused one changed nothing (see `control`).
//! - With [`Operations`] ([`serve_with`]): it binds the metrics endpoint (see `metrics`) before
//!   anything else, so a port in use stops the start before any program is attached; it sends
//!   `READY=1` to the service manager (see `notify`) only once the datapath is attached, the
//!   restored state is in the maps and both sockets listen; `STOPPING=1` when `shutdown`
//!   completes.
//! - When `shutdown` completes it stops accepting and removes its socket.

pub mod apply;
pub mod batch;
mod control;
mod enforcement;
pub mod explain;
pub mod ike;
pub mod metrics;
pub mod notify;
pub mod port;
pub mod protocol;
mod socket;
pub mod state;
pub mod status;

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use tracing::{info, warn};

pub use crate::datapath::XdpMode;
pub use crate::paths::{DEFAULT_PIN_DIR, DEFAULT_SOCKET, DEFAULT_STATE_DIR};
pub use enforcement::open as open_datapath;
pub use metrics::MetricsConfig;
pub use notify::Notifier;
pub use port::{Counters, Datapath, NoDatapath, PacketCount, PortError, SaCount};
pub use socket::{
    BATCH_BYTES_PER_SP, ControlGroup, ControlLimits, GroupError, IDLE_TIMEOUT, MAX_BATCH_REQUEST,
    MAX_CONNECTIONS, MAX_REQUEST,
};

/// Where the daemon keeps its files and what it attaches to.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Control socket to serve.
    pub socket: PathBuf,
    /// Directory of `state.json`.
    pub state_dir: PathBuf,
    /// Interfaces the datapath is attached to (empty with `--no-datapath`).
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub pin_dir: PathBuf,
    /// `false` under `--no-datapath`: reported by `status`.
    pub datapath_attached: bool,
    /// Who may use the control socket, and how much (see `socket`).
    pub control: ControlLimits,
}

/// What a daemon run as a service adds: the metrics endpoint and readiness notification.
#[derive(Debug, Default)]
pub struct Operations {
    /// Serve `GET /metrics` (`--metrics-listen`).
    pub metrics: Option<MetricsConfig>,
    /// Tell the service manager when the daemon is ready and when it stops.
    pub notifier: Option<Notifier>,
}

/// Run the daemon until `shutdown` completes; see the module docs.
pub async fn serve(
    config: DaemonConfig,
    datapath: Box<dyn Datapath>,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    serve_with(config, Operations::default(), datapath, shutdown).await
}

/// [`serve`] with a metrics endpoint and readiness notification; see the module docs.
pub async fn serve_with(
    config: DaemonConfig,
    operations: Operations,
    mut datapath: Box<dyn Datapath>,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    socket::refuse_if_answered(&config.socket)?;
    let metrics_listener = match operations.metrics {
        Some(m) => Some((
            tokio::net::TcpListener::bind(m.listen)
                .await
                .with_context(|| format!("--metrics-listen: cannot listen on {}", m.listen))?,
            m,
        )),
        None => None,
    };
    let (store, saved) = state::StateStore::open(&config.state_dir)?;
    datapath
        .sync(&saved.spd)
        .context("cannot restore the saved state into the datapath")?;
    info!(
        state_file = %store.path().display(), sas = saved.spd.sas().len(),
        sps = saved.spd.sps().len(), generation = saved.generation, "state restored"
    );
    let listener = socket::bind(&config.socket)?;
    let identity = control::Identity {
        socket: config.socket.display().to_string(),
        datapath: if config.datapath_attached {
            "xdp"
        } else {
            "none"
        }
        .to_owned(),
        interfaces: config.interfaces.clone(),
        xdp_mode: config.xdp_mode.as_str().to_owned(),
        pin_dir: config.pin_dir.display().to_string(),
    };
    let (control, worker) = control::start(saved, datapath, store, identity)
        .context("cannot start the state worker thread")?;
    // IKEv2: the task hears of the restored peers at once and negotiates `always` ones.
    let ike_link = ike::spawn(control.clone());
    control.attach_ike(ike_link.clone());
    let (metrics_stop, metrics_stopped) = tokio::sync::watch::channel(false);
    if let Some((metrics_listener, m)) = metrics_listener {
        info!(listen = %m.listen, max_sps = m.max_sps, "serving GET /metrics");
        let mut stopped = metrics_stopped;
        tokio::spawn(metrics::serve(
            metrics_listener,
            control.clone(),
            m.max_sps,
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ));
    }
    info!(socket = %config.socket.display(), "xipsec daemon ready");
    if let Some(notifier) = &operations.notifier {
        notifier.ready(&format!(
            "serving {} on {} interface(s)",
            config.socket.display(),
            config.interfaces.len()
        ));
    }
    let result = socket::serve_clients(&listener, control, &config.control, shutdown).await;
    // IKE: the peers hear of it (INFORMATIONAL Delete) and the negotiated SAs go (bounded).
    ike_link.stop().await;
    if let Some(notifier) = &operations.notifier {
        notifier.stopping();
    }
    let _ = metrics_stop.send(true);
    if let Err(e) = listener.remove() {
        warn!(error = %e, "cannot remove the control socket");
    }
    // Let the change being committed, if any, reach the disk before the process exits.
    if tokio::task::spawn_blocking(move || worker.stop())
        .await
        .is_err()
    {
        warn!("the state worker did not stop cleanly");
    }
    info!("xipsec daemon stopped");
    result
}

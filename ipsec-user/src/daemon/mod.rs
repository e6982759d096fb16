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
//! - When `shutdown` completes it stops accepting and removes its socket.

pub mod apply;
pub mod batch;
mod control;
mod enforcement;
pub mod explain;
pub mod port;
pub mod protocol;
mod socket;
pub mod state;

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use tracing::{info, warn};

pub use crate::datapath::XdpMode;
pub use crate::paths::{DEFAULT_PIN_DIR, DEFAULT_SOCKET, DEFAULT_STATE_DIR};
pub use enforcement::open as open_datapath;
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

/// Run the daemon until `shutdown` completes; see the module docs.
pub async fn serve(
    config: DaemonConfig,
    mut datapath: Box<dyn Datapath>,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    socket::refuse_if_answered(&config.socket)?;
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
    info!(socket = %config.socket.display(), "xipsec daemon ready");
    let result = socket::serve_clients(&listener, control, &config.control, shutdown).await;
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

//! The IKE task: the core, its sockets, its timer, and the loop that feeds them (see the
//! parent module's contract).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::config::Desired;
use super::install::{failure_code, ike_sa_entry};
use super::{Command, IkeJob, IkeLink};
use crate::daemon::control::Control;
use crate::daemon::protocol::Response;
use crate::ike::{Event, Ike, Output, SaState, Settings};
use crate::model::Initiate;

/// First wait before an `always` peer without an IKE SA is initiated again; doubled after each
/// attempt that did not establish, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_mins(1);
/// Least time between two on-demand initiations of one peer.
const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(2);
/// How often sockets are (re)bound and peers re-initiated.
const TICK: Duration = Duration::from_millis(500);
/// Retransmissions: 1 s, doubled, 3 times (given up after about 15 s): a dead peer's SAs go
/// within `--dpd` + 15 s.
const RETRANSMIT_BASE: Duration = Duration::from_secs(1);
const RETRANSMIT_TRIES: u32 = 3;
/// Stopping: the wait for the peers' answers to our Deletes before the one retransmission,
/// and in all (then the SAs are removed whatever the peers said).
const STOP_RESEND: Duration = Duration::from_millis(500);
const STOP_WAIT: Duration = Duration::from_secs(1);
/// How long the daemon waits for the IKE task to stop (the Deletes plus removing the SAs).
pub(super) const STOP_BOUND: Duration = Duration::from_secs(3);
/// Largest UDP payload read.
const MAX_DATAGRAM: usize = 65_535;

/// One received datagram: the address it arrived on, its source, its payload.
type Received = (SocketAddr, SocketAddr, Vec<u8>);

/// Per-peer bookkeeping of initiation and liveness.
#[derive(Default)]
struct PeerState {
    /// When the next `always` initiation may happen, and the wait after it.
    next_attempt: Option<Instant>,
    backoff: Duration,
    last_on_demand: Option<Instant>,
}

struct Task {
    ike: Ike,
    control: Control,
    /// What each peer asks for, as last configured; `registered` ones are in the core.
    desired: HashMap<String, Desired>,
    registered: HashMap<String, Desired>,
    peers: HashMap<String, PeerState>,
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    received: mpsc::Sender<Received>,
}

/// Start the IKE task on the current tokio runtime; its link goes to the control worker
/// (`Control::attach_ike`). It ends when the worker drops the link.
pub(crate) fn spawn(control: Control) -> IkeLink {
    let (commands, queue) = mpsc::unbounded_channel();
    let (received, datagrams) = mpsc::channel(1024);
    let settings = Settings {
        retransmit_base: RETRANSMIT_BASE,
        retransmit_tries: RETRANSMIT_TRIES,
        ..Settings::default()
    };
    let task = Task {
        ike: Ike::new(settings),
        control,
        desired: HashMap::new(),
        registered: HashMap::new(),
        peers: HashMap::new(),
        sockets: HashMap::new(),
        received,
    };
    tokio::spawn(task.run(queue, datagrams));
    IkeLink(commands)
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut datagrams: mpsc::Receiver<Received>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.ike.next_deadline();
            let timer = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop(done)) => {
                        self.stop(&mut datagrams).await;
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.command(command).await,
                    None => break,
                },
                Some((local, remote, bytes)) = datagrams.recv() => {
                    let out = self.ike.receive(local, remote, &bytes, Instant::now());
                    self.act(out).await;
                }
                () = timer => {
                    let out = self.ike.on_timeout(Instant::now());
                    self.act(out).await;
                }
                _ = tick.tick() => self.maintain().await,
            }
        }
        debug!("ike task stopped");
    }

    /// The daemon stops: Delete each established IKE SA (one retransmission, [`STOP_WAIT`] in
    /// all), then remove every negotiated SA from the state; see the parent module's contract.
    async fn stop(&mut self, datagrams: &mut mpsc::Receiver<Received>) {
        let started = Instant::now();
        let peers: Vec<String> = self
            .ike
            .ike_sas()
            .into_iter()
            .filter(|sa| sa.state == SaState::Established)
            .map(|sa| sa.peer)
            .collect();
        let mut sent = Vec::new();
        for peer in &peers {
            if let Ok(out) = self.ike.delete_ike_sa(peer, started) {
                sent.extend(out.datagrams.iter().cloned());
                self.act(out).await;
            }
        }
        if !peers.is_empty() {
            info!(peers = ?peers, "ike: stopping: deleting the ike sas with the peers");
        }
        let mut resent = false;
        while !sent.is_empty()
            && self
                .ike
                .ike_sas()
                .iter()
                .any(|sa| sa.state == SaState::Deleting)
        {
            let wake = started + if resent { STOP_WAIT } else { STOP_RESEND };
            tokio::select! {
                Some((local, remote, bytes)) = datagrams.recv() => {
                    let out = self.ike.receive(local, remote, &bytes, Instant::now());
                    self.act(out).await;
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    if resent {
                        break;
                    }
                    resent = true;
                    for d in &sent {
                        self.send(d.local, d.remote, &d.bytes).await;
                    }
                }
            }
        }
        let out = self.ike.forget_all();
        self.act(out).await;
        info!(
            took_ms = started.elapsed().as_millis(),
            "ike: stopped; negotiated sas removed"
        );
    }

    async fn command(&mut self, command: Command) {
        match command {
            // Handled by `run`, which owns the datagram queue the Deletes' answers arrive on.
            Command::Stop(done) => {
                let _ = done.send(());
            }
            Command::Configure(desired) => self.configure(desired).await,
            Command::List(reply) => {
                let now = Instant::now();
                let list = self
                    .ike
                    .ike_sas()
                    .iter()
                    .map(|info| ike_sa_entry(info, now))
                    .collect();
                let _ = reply.send(Response::IkeSaList(list));
            }
            Command::Rekey { peer, ike, reply } => {
                let now = Instant::now();
                let started = if ike {
                    self.ike.rekey_ike_sa(&peer, now).map(|out| {
                        let spis = self
                            .ike
                            .ike_sas()
                            .iter()
                            .filter(|sa| sa.peer == peer && sa.state == SaState::Established)
                            .map(|sa| hex::encode(sa.spi_i))
                            .collect::<Vec<_>>();
                        (out, spis)
                    })
                } else {
                    self.ike.rekey_children(&peer, now).map(|(out, spis)| {
                        (out, spis.iter().map(|spi| format!("{spi:08x}")).collect())
                    })
                };
                match started {
                    Ok((out, sas)) => {
                        info!(peer, sa = if ike { "ike" } else { "child" }, replacing = ?sas, "ike: rekey asked for");
                        self.act(out).await;
                        let _ = reply.send(Response::IkeRekeyStarted { peer, sas });
                    }
                    Err(e) => {
                        let _ = reply.send(Response::Error {
                            message: format!(
                                "{}: {e}; nothing changed",
                                crate::model::opt::PEER_NAME
                            ),
                        });
                    }
                }
            }
            Command::OnDemand(peer) => {
                let now = Instant::now();
                let wanted = self
                    .registered
                    .get(&peer)
                    .is_some_and(|d| d.peer.initiate == Initiate::OnDemand);
                let state = self.peers.entry(peer.clone()).or_default();
                let recent = state
                    .last_on_demand
                    .is_some_and(|t| now.duration_since(t) < ON_DEMAND_INTERVAL);
                if wanted && !recent && !self.has_ike_sa(&peer) {
                    self.peers.entry(peer.clone()).or_default().last_on_demand = Some(now);
                    info!(peer, "ike: initiating on demand");
                    self.initiate(&peer).await;
                }
            }
        }
    }

    /// Make the core's peers what `desired` asks for; see the parent module's contract.
    async fn configure(&mut self, desired: Vec<Desired>) {
        let now = Instant::now();
        self.desired = desired
            .into_iter()
            .map(|d| (d.peer.name.clone(), d))
            .collect();
        let gone: Vec<String> = self
            .registered
            .iter()
            .filter(|(name, old)| self.desired.get(*name) != Some(*old))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.registered.remove(&name);
            if let Ok(out) = self.ike.remove_peer(&name, now) {
                info!(peer = name, "ike: peer removed or changed");
                self.act(out).await;
            }
        }
        let new: Vec<Desired> = self
            .desired
            .values()
            .filter(|d| d.runnable() && !self.registered.contains_key(&d.peer.name))
            .cloned()
            .collect();
        for d in new {
            let name = d.peer.name.clone();
            if !d.mixed_modes.is_empty() {
                warn!(
                    peer = name, sps = ?d.mixed_modes, mode = ?d.mode,
                    "ike: these sps' mode differs from the peer's first sp; they stay unbound (their flows are dropped)"
                );
            }
            let config = match d.config() {
                Ok(config) => config,
                Err(e) => {
                    warn!(peer = name, error = %e, "ike: peer not usable");
                    continue;
                }
            };
            if let Err(e) = self.ike.add_peer(config) {
                warn!(peer = name, error = %e, "ike: the core refused the peer");
                continue;
            }
            info!(peer = name, local = %d.peer.local, remote = %d.peer.remote,
                initiate = d.peer.initiate.as_str(), "ike: peer configured");
            let always = d.peer.initiate == Initiate::Always;
            self.registered.insert(name.clone(), d);
            self.peers.insert(name.clone(), PeerState::default());
            self.bind(&name);
            if always {
                self.initiate(&name).await;
            }
        }
    }

    fn has_ike_sa(&self, peer: &str) -> bool {
        self.ike.ike_sas().iter().any(|sa| sa.peer == peer)
    }

    async fn initiate(&mut self, peer: &str) {
        self.bind(peer);
        let now = Instant::now();
        match self.ike.initiate(peer, now) {
            Ok(out) => {
                let state = self.peers.entry(peer.to_owned()).or_default();
                state.backoff = (state.backoff * 2).clamp(FIRST_RETRY, MAX_RETRY);
                state.next_attempt = Some(now + state.backoff);
                self.act(out).await;
            }
            Err(e) => warn!(peer, error = %e, "ike: cannot initiate"),
        }
    }

    /// Periodic work: rekeyed CHILD_SAs that ESP arrived on (they may send), sockets of peers
    /// whose address was missing, `always` peers without an IKE SA, and `on-demand` peers whose
    /// flows found no SA.
    async fn maintain(&mut self) {
        self.control.ike_esp_seen();
        let waiting = self
            .registered
            .values()
            .any(|d| d.peer.initiate == Initiate::OnDemand && !self.has_ike_sa(&d.peer.name));
        if waiting {
            for peer in self.control.ike_demand().await {
                self.command(Command::OnDemand(peer)).await;
            }
        }
        let now = Instant::now();
        let names: Vec<String> = self.registered.keys().cloned().collect();
        let sas = self.ike.ike_sas();
        for name in names {
            self.bind(&name);
            let Some(d) = self.registered.get(&name) else {
                continue;
            };
            let initiate = d.peer.initiate;
            // Liveness (`--dpd`) is the core's: `Lifetimes::dpd` drives it from `on_timeout`.
            let established = sas
                .iter()
                .any(|sa| sa.peer == name && sa.state == SaState::Established);
            let any = sas.iter().any(|sa| sa.peer == name);
            let state = self.peers.entry(name.clone()).or_default();
            if established {
                state.backoff = Duration::ZERO;
                state.next_attempt = None;
            } else if !any
                && initiate == Initiate::Always
                && state.next_attempt.is_none_or(|at| now >= at)
            {
                self.initiate(&name).await;
            }
        }
    }

    /// Bind the sockets of `peer`'s local address if they are not yet; a missing address is
    /// retried on the next tick.
    fn bind(&mut self, peer: &str) {
        let Some(d) = self.registered.get(peer) else {
            return;
        };
        let settings = self.ike.settings();
        for port in [settings.ike_port, settings.natt_port] {
            let local = SocketAddr::V6(SocketAddrV6::new(d.peer.local, port, 0, 0));
            if self.sockets.contains_key(&local) {
                continue;
            }
            match open(local) {
                Ok(socket) => {
                    let socket = Arc::new(socket);
                    self.sockets.insert(local, socket.clone());
                    tokio::spawn(read(socket, local, self.received.clone()));
                    debug!(%local, "ike: listening");
                }
                Err(e) => debug!(%local, error = %e, "ike: cannot bind yet"),
            }
        }
    }

    /// Act on what the core produced, then send its datagrams; then the same for what acting
    /// produced. Events go first so that the datapath has what an answer announces before the
    /// peer reads it (make before break, RFC 7296 §2.8): a new CHILD_SA's inbound SA is
    /// installed before the CREATE_CHILD_SA response that lets the peer send on it, and a
    /// deleted CHILD_SA's flows have moved to its successor before the Delete is answered.
    async fn act(&mut self, first: Output) {
        let mut queue = VecDeque::from([first]);
        while let Some(out) = queue.pop_front() {
            for event in out.events {
                if let Some(more) = self.event(event).await {
                    queue.push_back(more);
                }
            }
            for datagram in out.datagrams {
                self.send(datagram.local, datagram.remote, &datagram.bytes)
                    .await;
            }
        }
    }

    async fn send(&mut self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) {
        if !self.sockets.contains_key(&local)
            && let Ok(socket) = open(local)
        {
            let socket = Arc::new(socket);
            self.sockets.insert(local, socket.clone());
            tokio::spawn(read(socket, local, self.received.clone()));
        }
        let Some(socket) = self.sockets.get(&local) else {
            debug!(%local, "ike: no socket to send from");
            return;
        };
        if let Err(e) = socket.send_to(bytes, remote).await {
            debug!(%local, %remote, error = %e, "ike: send failed");
        }
    }

    /// One event; what the core answered if acting on it needed the core again.
    async fn event(&mut self, event: Event) -> Option<Output> {
        match event {
            Event::IkeSaEstablished {
                peer,
                spis,
                suite,
                initiator,
                encapsulated,
            } => {
                info!(
                    peer,
                    spi_i = hex::encode(spis.0),
                    spi_r = hex::encode(spis.1),
                    encryption = suite.encryption.as_str(),
                    group = suite.group.name(),
                    initiator,
                    encapsulated,
                    "ike: ike sa established"
                );
                None
            }
            Event::ChildSaEstablished(child) => {
                let (peer, inbound) = (child.peer.clone(), child.inbound_spi);
                match self.control.ike(IkeJob::Install(child)).await {
                    Ok(()) => None,
                    Err(e) => {
                        warn!(peer, error = %e, "ike: cannot install the child sa; deleting it");
                        self.ike.delete_child_sa(inbound, Instant::now()).ok()
                    }
                }
            }
            Event::ChildSaDeleted {
                peer,
                inbound_spi,
                outbound_spi,
            } => {
                if let Err(e) = self
                    .control
                    .ike(IkeJob::Remove {
                        peer: peer.clone(),
                        spis: [inbound_spi, outbound_spi],
                    })
                    .await
                {
                    warn!(peer, error = %e, "ike: cannot remove the child sa's sas");
                }
                None
            }
            Event::IkeSaDeleted { peer, spis } => {
                info!(
                    peer,
                    spi_i = hex::encode(spis.0),
                    spi_r = hex::encode(spis.1),
                    "ike: ike sa deleted"
                );
                None
            }
            Event::Failed { peer, failure } => {
                warn!(
                    peer, error = failure_code(&failure), reason = %failure,
                    "ike: negotiation with the peer failed"
                );
                None
            }
            Event::Dropped { remote, reason } => {
                debug!(%remote, reason, "ike: datagram dropped");
                None
            }
            Event::RekeyCollision {
                peer,
                ike,
                ours_survives,
            } => {
                info!(
                    peer,
                    sa = if ike { "ike" } else { "child" },
                    survivor = if ours_survives { "ours" } else { "peer" },
                    "ike: simultaneous rekey (RFC 7296 §2.8.1): the exchange with the lowest nonce made the redundant sa"
                );
                None
            }
            Event::CookieSent { remote } => {
                debug!(%remote, "ike: answered with a cookie");
                None
            }
            // The CHILD_SAs moved to the new IKE SA as they are: nothing to install or remove.
            Event::IkeSaRekeyed {
                peer,
                old_spis,
                new_spis,
            } => {
                info!(
                    peer,
                    old_spi_i = hex::encode(old_spis.0),
                    new_spi_i = hex::encode(new_spis.0),
                    new_spi_r = hex::encode(new_spis.1),
                    "ike: ike sa rekeyed"
                );
                None
            }
        }
    }
}

/// A UDP socket on `local` (SO_REUSEADDR, so a restarted daemon binds at once; SO_REUSEPORT,
/// so the ESP engine's GRO socket on port 4500 can join it: a steering program the engine
/// attaches sends IKE behind the non-ESP marker here and ESP there, see `engine::udp_gso`).
fn open(local: SocketAddr) -> std::io::Result<UdpSocket> {
    use std::os::fd::FromRawFd as _;
    let IpAddr::V6(_) = local.ip() else {
        return Err(std::io::Error::other("ipv6 only"));
    };
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet6,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReuseAddr, &true)?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReusePort, &true)?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &true)?;
    let SocketAddr::V6(v6) = local else {
        return Err(std::io::Error::other("ipv6 only"));
    };
    nix::sys::socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &nix::sys::socket::SockaddrIn6::from(v6),
    )?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(socket);
    // SAFETY: `fd` is the socket just created and bound, whose ownership `into_raw_fd` gave
    // up; the std socket takes it over and closes it.
    let std_socket = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
    UdpSocket::from_std(std_socket)
}

/// Forward every datagram `socket` receives to the task, with the address it arrived on.
async fn read(socket: Arc<UdpSocket>, local: SocketAddr, to: mpsc::Sender<Received>) {
    let mut buffer = vec![0; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((len, remote)) => {
                if to
                    .send((local, remote, buffer[..len].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                debug!(%local, error = %e, "ike: receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

//! The daemon's [`Datapath`] port as enforced: the kernel programs and maps (`datapath`) composed
//! with the userspace ESP engine (`engine`). Neither layer knows the other; this module joins them.
//!
//! Programs are attached only after the first successful sync, so a restarting daemon never
//! passes traffic through empty tables: packets see the restored SPD from their first one. The
//! ESP engine learns each change before the kernel does, so a newly protected flow finds its SA.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{Array, Map, MapData};
use ipsec_common::abi;

use super::port::PortError;
use super::{Counters, Datapath, PacketCount};
use crate::datapath::{
    KernelDatapath, LoadOptions, XdpMode, XskSocket, check_interface, monotonic_ns,
};
use crate::engine::{EngineConfig, EspEngine};
use crate::model::{Chain, Spd};

struct Attaching {
    // Field order is drop order: the heartbeat stops first, then the engine (and its TUN
    // device) goes, so from then on protected traffic is dropped by TC egress rather than
    // queued to a dead reader.
    _heartbeat: Heartbeat,
    engine: EspEngine,
    kernel: KernelDatapath,
    interfaces: Vec<String>,
    xdp_mode: XdpMode,
    attached: bool,
    sp_ids: Vec<u32>,
    /// Where the links are pinned, for `status` (see `status`).
    pin_dir: std::path::PathBuf,
}

/// Load and pin the programs and maps (bpffs is mounted when missing) and start the ESP engine
/// (`engine`; it receives ESP by AF_XDP on `interfaces`); the programs are attached to
/// `interfaces` on the first sync.
pub fn open(
    interfaces: &[String],
    xdp_mode: XdpMode,
    pin_dir: &Path,
    engine: EngineConfig,
) -> Result<Box<dyn Datapath>, PortError> {
    let mut kernel = KernelDatapath::load(&LoadOptions {
        pin_dir: Some(pin_dir.to_path_buf()),
        benchmark: false,
    })?;
    let engine = EspEngine::start(EngineConfig {
        xsk_interfaces: interfaces.to_vec(),
        ..engine
    })
    .map_err(|source| PortError::EngineStart { source })?;
    // The engine's own ESP is recognised by its socket cookie before anything is redirected to
    // the engine, so no ESP of ours is ever classified (and looped back into the TUN device).
    kernel.set_engine_sockets(&engine.send_socket_cookies())?;
    kernel.set_esp_target(engine.tun_ifindex())?;
    let sockets: Vec<XskSocket> = engine
        .xsk_bindings()
        .iter()
        .map(|b| XskSocket {
            ifindex: b.ifindex,
            queue: b.queue,
            fd: b.fd,
        })
        .collect();
    kernel.set_esp_sockets(&sockets)?;
    kernel.set_engine_alive()?;
    let heartbeat = Heartbeat::start(pin_dir)?;
    tracing::info!(tun = engine.tun_name(), "ESP engine started");
    Ok(Box::new(Attaching {
        _heartbeat: heartbeat,
        engine,
        kernel,
        interfaces: interfaces.to_vec(),
        xdp_mode,
        attached: false,
        sp_ids: Vec::new(),
        pin_dir: pin_dir.to_path_buf(),
    }))
}

/// Writes the engine's sign of life (`abi::CONFIG_ENGINE_ALIVE_NS`) every
/// `abi::ENGINE_HEARTBEAT_NS` while the engine runs, through its own handle on the pinned
/// config map. It stops when an engine thread has died (the daemon exits then) or on drop, so
/// within `abi::ENGINE_ALIVE_TIMEOUT_NS` of a dead or killed daemon TC egress drops protected
/// packets itself and counts them as `drop_ipsec_unavailable`.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn start(pin_dir: &Path) -> Result<Self, PortError> {
        let path = pin_dir.join(abi::CONFIG);
        let pinned = |source| PortError::PinnedMap {
            path: path.clone(),
            source,
        };
        let map = MapData::from_pin(&path).map_err(pinned)?;
        let mut config: Array<MapData, u64> = Array::try_from(Map::Array(map)).map_err(pinned)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("xipsec-heartbeat".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) && crate::engine::death().is_none() {
                        if let Err(e) = config.set(abi::CONFIG_ENGINE_ALIVE_NS, monotonic_ns(), 0) {
                            tracing::warn!(error = %Chain(&e), "cannot write the engine heartbeat");
                        }
                        std::thread::sleep(Duration::from_nanos(abi::ENGINE_HEARTBEAT_NS));
                    }
                })
                .map_err(|source| PortError::Thread {
                    name: "xipsec-heartbeat",
                    source,
                })?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Datapath for Attaching {
    fn sync(&mut self, spd: &Spd) -> Result<(), PortError> {
        self.engine.update(spd)?;
        self.kernel.sync(spd)?;
        self.sp_ids = spd.sps().iter().map(|sp| sp.id).collect();
        if !self.attached {
            // All or nothing: check every interface first, and undo what this start attached
            // if one attach fails, so a failed start leaves no interface half-configured.
            for interface in &self.interfaces {
                check_interface(interface)?;
            }
            for interface in &self.interfaces {
                match self.kernel.attach(interface, self.xdp_mode) {
                    Ok(attached) => {
                        tracing::info!(interface, xdp_mode = %attached.xdp_mode, "attached");
                    }
                    Err(e) => {
                        self.kernel.abandon_attachments();
                        return Err(PortError::Attach {
                            interface: interface.clone(),
                            source: Box::new(e),
                        });
                    }
                }
            }
            self.attached = true;
        }
        Ok(())
    }

    fn reset_replay(&mut self, spi: u32) -> Result<bool, PortError> {
        Ok(self.engine.reset_replay(spi)?)
    }

    fn explain(
        &self,
        direction: crate::model::Direction,
        frame: &[u8],
    ) -> Result<Option<ipsec_common::explain::ExplainResult>, PortError> {
        Ok(Some(self.kernel.explain(direction, frame)?))
    }

    fn inspect(&self) -> super::status::Inspection {
        let interface_name = |ifindex: u32| {
            nix::net::if_::if_indextoname(ifindex).map_or_else(
                |_| format!("ifindex {ifindex}"),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        super::status::Inspection {
            interfaces: super::status::inspect_interfaces(&self.pin_dir, &self.interfaces),
            engine: Some(super::status::EngineState {
                tun: (self.engine.tun_name().to_owned(), self.engine.tun_ifindex()),
                xsk: self
                    .engine
                    .xsk_bindings()
                    .iter()
                    .map(|b| (interface_name(b.ifindex), b.queue))
                    .collect(),
            }),
            verdicts: self
                .kernel
                .counters()
                .map(|all| {
                    all.into_iter()
                        .map(|(c, v)| (c.name().to_string(), v))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn counters(&self) -> Result<Counters, PortError> {
        // XDP/TC count what they matched; ESP meets its inbound SP only after decryption, in
        // the engine: a policy's counters are the sum of both.
        let decrypted = self.engine.sp_counters();
        let sp = self
            .kernel
            .sp_counters(self.sp_ids.iter().copied())?
            .into_iter()
            .map(|(id, s)| {
                let (packets, bytes) = decrypted.get(&id).copied().unwrap_or_default();
                (
                    id,
                    PacketCount {
                        packets: s.packets + packets,
                        bytes: s.bytes + bytes,
                    },
                )
            })
            .collect();
        let mut reasons: Vec<(String, u64)> = self
            .kernel
            .counters()?
            .into_iter()
            .filter(|(c, _)| c.is_drop() || c.is_event())
            .map(|(c, v)| (c.name().to_string(), v))
            .collect();
        reasons.extend(self.engine.stats());
        Ok(Counters {
            sp,
            sa: self.engine.sa_counters(),
            reasons,
        })
    }
}

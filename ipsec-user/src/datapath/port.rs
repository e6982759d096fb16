//! The daemon's [`Datapath`] port, implemented by the kernel datapath.
//!
//! Programs are attached only after the first successful sync, so a restarting daemon never
//! passes traffic through empty tables: packets see the restored SPD from their first one.

use std::path::Path;

use anyhow::Context as _;
use ipsec_common::abi::Counter;

use super::kernel::{KernelDatapath, LoadOptions};
use crate::{
    daemon::{Counters, Datapath, PacketCount, XdpMode},
    model::Spd,
};

struct Attaching {
    kernel: KernelDatapath,
    interfaces: Vec<String>,
    xdp_mode: XdpMode,
    attached: bool,
    sp_ids: Vec<u32>,
}

/// Load and pin the programs and maps (bpffs is mounted when missing); they are attached to
/// `interfaces` on the first sync.
pub fn open(
    interfaces: &[String],
    xdp_mode: XdpMode,
    pin_dir: &Path,
) -> anyhow::Result<Box<dyn Datapath>> {
    let kernel = KernelDatapath::load(&LoadOptions {
        pin_dir: Some(pin_dir.to_path_buf()),
        force_cache_miss: false,
    })?;
    Ok(Box::new(Attaching {
        kernel,
        interfaces: interfaces.to_vec(),
        xdp_mode,
        attached: false,
        sp_ids: Vec::new(),
    }))
}

impl Datapath for Attaching {
    fn sync(&mut self, spd: &Spd) -> anyhow::Result<()> {
        self.kernel.sync(spd)?;
        self.sp_ids = spd.sps().iter().map(|sp| sp.id).collect();
        if !self.attached {
            for interface in &self.interfaces {
                let attached = self
                    .kernel
                    .attach(interface, self.xdp_mode)
                    .with_context(|| format!("attaching to {interface}"))?;
                tracing::info!(interface, xdp_mode = %attached.xdp_mode, "attached");
            }
            self.attached = true;
        }
        Ok(())
    }

    fn counters(&self) -> anyhow::Result<Counters> {
        let sp = self
            .kernel
            .sp_counters(self.sp_ids.iter().copied())?
            .into_iter()
            .map(|(id, s)| {
                (
                    id,
                    PacketCount {
                        packets: s.packets,
                        bytes: s.bytes,
                    },
                )
            })
            .collect();
        let reasons = self
            .kernel
            .counters()?
            .into_iter()
            .filter(|(c, _)| Counter::is_drop(*c))
            .map(|(c, v)| (c.name().to_string(), v))
            .collect();
        Ok(Counters {
            sp,
            sa: Default::default(),
            reasons,
        })
    }
}

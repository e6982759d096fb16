//! The port between the control plane and the packet datapath.
//!
//! The daemon owns the policy database ([`Spd`]); a [`Datapath`] makes the kernel (maps,
//! programs, ESP engine) equal to it and reports counters back. The real implementation lives in
//! `crate::datapath` and is the only code that touches aya; [`NoDatapath`] attaches nothing and
//! serves `xipsec daemon --no-datapath` (tests and staging).

use crate::model::Spd;
pub use crate::model::{Counters, PacketCount, SaCount};

/// What the daemon needs from a datapath.
///
/// The daemon calls `sync` with the complete desired state after every accepted change and once
/// at start-up (restore). Calls are serialised: the daemon never calls two methods at once.
pub trait Datapath: Send {
    /// Make the kernel maps equal `spd`; packets never see a half-applied change.
    fn sync(&mut self, spd: &Spd) -> anyhow::Result<()>;
    /// Counters read back from the kernel/ESP engine.
    fn counters(&self) -> anyhow::Result<Counters>;
    /// Empty the replay window of inbound SA `spi` and forget its persisted ceiling
    /// (`xipsec sa reset-replay`). `Ok(false)` when the datapath holds no such SA.
    fn reset_replay(&mut self, spi: u32) -> anyhow::Result<bool> {
        anyhow::bail!("this datapath keeps no replay window for spi {spi:#x}")
    }
}

/// A datapath that attaches nothing: state is managed and persisted, no packet is touched.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDatapath;

impl Datapath for NoDatapath {
    fn sync(&mut self, _spd: &Spd) -> anyhow::Result<()> {
        Ok(())
    }

    fn counters(&self) -> anyhow::Result<Counters> {
        Ok(Counters::default())
    }

    fn reset_replay(&mut self, _spi: u32) -> anyhow::Result<bool> {
        // No engine, no window: nothing is accepted, so there is nothing to reset.
        Ok(true)
    }
}

//! The port between the control plane and the packet datapath.
//!
//! The daemon owns the policy database ([`Spd`]); a [`Datapath`] makes the kernel (maps,
//! programs, ESP engine) equal to it and reports counters back. The real implementation lives in
//! `crate::datapath` and is the only code that touches aya; [`NoDatapath`] attaches nothing and
//! serves `xipsec daemon --no-datapath` (tests and staging).
//!
//! Every failure crossing the port is a [`PortError`]: the kernel datapath's
//! [`DatapathError`] and the engine's [`EngineError`] pass through unchanged (a caller can match
//! on them), and the few failures of the composition itself have their own variants.

use std::path::PathBuf;

use crate::datapath::DatapathError;
use crate::engine::EngineError;
use crate::model::Spd;
pub use crate::model::{Counters, PacketCount, SaCount};

/// Why a [`Datapath`] call failed. Messages never repeat their cause: it is the `source`, and
/// a chain printer (`{:#}` of anyhow, [`crate::model::Chain`]) shows it once.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The kernel programs and maps (boxed: a `DatapathError` is large, and errors should not
    /// make every `Result` of the port wide).
    #[error(transparent)]
    Datapath(Box<DatapathError>),
    /// The userspace ESP engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The ESP engine did not start (its TUN device, socket or threads).
    #[error("starting the ESP engine")]
    EngineStart {
        #[source]
        source: EngineError,
    },
    /// Attaching the programs to one of the configured interfaces failed; nothing this start
    /// attached stays attached.
    #[error("attaching to {interface}")]
    Attach {
        interface: String,
        #[source]
        source: Box<DatapathError>,
    },
    /// The pinned config map the heartbeat writes could not be opened.
    #[error("opening the pinned map {}", path.display())]
    PinnedMap {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    /// A helper thread could not be started.
    #[error("starting the {name} thread")]
    Thread {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `reset_replay` on a datapath that keeps no replay windows.
    #[error("this datapath keeps no replay window for spi {spi:#x}")]
    NoReplayWindow { spi: u32 },
}

impl From<DatapathError> for PortError {
    fn from(e: DatapathError) -> Self {
        Self::Datapath(Box::new(e))
    }
}

/// What the daemon needs from a datapath.
///
/// The daemon calls `sync` with the complete desired state after every accepted change and once
/// at start-up (restore). Calls are serialised: the daemon never calls two methods at once.
pub trait Datapath: Send {
    /// Make the kernel maps equal `spd`; packets never see a half-applied change.
    fn sync(&mut self, spd: &Spd) -> Result<(), PortError>;
    /// Counters read back from the kernel/ESP engine.
    fn counters(&self) -> Result<Counters, PortError>;
    /// Empty the replay window of inbound SA `spi` and forget its persisted ceiling
    /// (`xipsec sa reset-replay`). `Ok(false)` when the datapath holds no such SA.
    fn reset_replay(&mut self, spi: u32) -> Result<bool, PortError> {
        Err(PortError::NoReplayWindow { spi })
    }
    /// What the kernel's classifier makes of `frame` in `direction` (`datapath::explain`),
    /// changing nothing; `None` when there is no kernel datapath.
    fn explain(
        &self,
        _direction: crate::model::Direction,
        _frame: &[u8],
    ) -> Result<Option<ipsec_common::explain::ExplainResult>, PortError> {
        Ok(None)
    }

    /// What the kernel reports about the attachments and the engine, for `status` and the
    /// metrics; a datapath that attaches nothing reports nothing.
    fn inspect(&self) -> super::status::Inspection {
        super::status::Inspection::default()
    }
}

/// A datapath that attaches nothing: state is managed and persisted, no packet is touched.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDatapath;

impl Datapath for NoDatapath {
    fn sync(&mut self, _spd: &Spd) -> Result<(), PortError> {
        Ok(())
    }

    fn counters(&self) -> Result<Counters, PortError> {
        Ok(Counters::default())
    }

    fn reset_replay(&mut self, _spi: u32) -> Result<bool, PortError> {
        // No engine, no window: nothing is accepted, so there is nothing to reset.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use aya::programs::ProgramError;
    use aya::sys::SyscallError;

    use super::*;
    use crate::model::Chain;

    /// What `xipsec daemon` prints when it cannot attach: the port error, the datapath error
    /// under it, aya's and the errno, each once.
    fn attach_failure() -> PortError {
        PortError::Attach {
            interface: "xsys0".into(),
            source: Box::new(DatapathError::Attach {
                program: "xdp_ingress",
                interface: "xsys0".into(),
                source: ProgramError::SyscallError(SyscallError {
                    call: "bpf_link_create",
                    io_error: io::Error::from_raw_os_error(libc::EPERM),
                }),
            }),
        }
    }

    #[test]
    fn a_nested_port_error_shows_each_cause_once() {
        let errno = io::Error::from_raw_os_error(libc::EPERM).to_string();
        let chained = Chain(&attach_failure()).to_string();
        assert!(chained.starts_with("attaching to xsys0: failed to attach xdp_ingress to xsys0"));
        assert_eq!(chained.matches(&errno).count(), 1, "{chained}");
        assert_eq!(chained.matches("failed to attach").count(), 1, "{chained}");
        // main prints anyhow's `{:#}`: the same chain.
        let printed = format!("{:#}", anyhow::Error::from(attach_failure()));
        assert_eq!(printed, chained);
    }

    #[test]
    fn engine_errors_pass_through_the_port_typed() {
        let engine = EngineError::TunName {
            name: "bad/name".into(),
        };
        let port = PortError::from(engine);
        assert!(
            matches!(port, PortError::Engine(EngineError::TunName { ref name }) if name == "bad/name")
        );
        // Transparent: the port adds no text of its own.
        assert!(port.to_string().starts_with("invalid tun device name"));
        let datapath = PortError::from(DatapathError::NoSuchInterface("xsys9".into()));
        assert_eq!(Chain(&datapath).to_string(), "no such interface: xsys9");
    }

    #[test]
    fn no_datapath_answers_without_touching_anything() {
        let mut none = NoDatapath;
        none.sync(&Spd::new()).expect("syncing nothing");
        assert!(none.reset_replay(0x100).expect("resetting"));
    }

    #[test]
    fn a_datapath_without_replay_windows_says_so() {
        struct Counting;
        impl Datapath for Counting {
            fn sync(&mut self, _spd: &Spd) -> Result<(), PortError> {
                Ok(())
            }
            fn counters(&self) -> Result<Counters, PortError> {
                Ok(Counters::default())
            }
        }
        let e = Counting
            .reset_replay(0x1234)
            .expect_err("no window to reset");
        assert!(matches!(e, PortError::NoReplayWindow { spi: 0x1234 }));
        assert_eq!(
            e.to_string(),
            "this datapath keeps no replay window for spi 0x1234"
        );
    }
}

//! xipsec userspace: the SA/SP model, ESP crypto, the aya datapath, the daemon and the CLI.

pub mod atomic_file;
pub mod classifier;
pub mod cli;
pub mod crypto;
pub mod daemon;
pub mod datapath;
pub mod engine;
pub mod ike;
pub mod model;
pub mod paths;
pub mod wire;

/// What the `cargo-fuzz` targets in `fuzz/` drive, gathered in one place. Not an API: names and
/// signatures follow the modules they come from.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::daemon::protocol::Request;
    pub use crate::daemon::state::parse as parse_state_file;
    pub use crate::engine::{gro, mss, reassembly};
    pub use crate::model::packet::{Parsed, parse_frame};
    pub use crate::wire;
}

//! xipsec userspace: the SA/SP model, ESP crypto, the aya datapath, the daemon and the CLI.

pub mod cli;
pub mod crypto;
pub mod daemon;
pub mod datapath;
pub mod model;

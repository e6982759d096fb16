//! Where xipsec keeps its files by default (the daemon's and the engine's flags).

/// Default `--socket`.
pub const DEFAULT_SOCKET: &str = "/run/xipsec/control.sock";
/// Default `--state-dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xipsec";
/// Default `--pin-dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xipsec";

//! How the XDP programs are attached (`--xdp-mode`).

/// How XDP programs are attached (`--xdp-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    /// Native (driver) mode where the driver supports it, generic (skb) mode otherwise.
    #[default]
    Auto,
    /// Driver mode only; attaching fails on drivers without XDP support.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
}

impl XdpMode {
    /// The `--xdp-mode` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

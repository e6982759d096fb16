//! The command line, as clap definitions: every command, option, short flag and help text.
//!
//! Option values are collected as raw strings and handed to the model unchanged: the model alone
//! decides what is valid, so clap marks nothing as required and parses no SA/SP value (a missing
//! option is reported by the model, on one line, naming it).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::daemon::{DEFAULT_PIN_DIR, DEFAULT_SOCKET, DEFAULT_STATE_DIR, XdpMode};
use crate::engine::{DEFAULT_RX_COALESCE, DEFAULT_TDES_BLOCK_LIMIT};
use crate::model::{SaAddArgs, SaRemoveArgs, SpAddArgs, SpRemoveArgs};

/// xipsec: IPv6 IPsec (ESP) for Linux with XDP, configured like ESXi's `esxcli network ip ipsec`.
#[derive(Debug, Parser)]
#[command(
    name = "xipsec",
    version,
    about,
    long_about = "xipsec: IPv6 IPsec (ESP) for Linux with XDP, configured like ESXi's \
        `esxcli network ip ipsec`.\n\n\
        A security association (SA) says how traffic is protected: source and destination, \
        encryption and integrity parameters, and a name. A security policy (SP) says when: \
        source and destination prefixes, ports, protocol and direction of the traffic, mode, \
        and which SA to use.\n\n\
        Commands talk to the daemon (`xipsec daemon`). The `esxcli network ip ipsec` prefix (or \
        `network ip ipsec` alone) is accepted, so pasted esxcli lines work.",
    after_help = "Examples:\n  \
        xipsec sa add --sa-source 3ffe:501:ffff:0::a --sa-destination 3ffe:501:ffff:0001:0000:0000:0000:0001 \\\n    \
        --sa-mode transport --sa-spi 0x1000 --encryption-algorithm 3des-cbc \\\n    \
        --encryption-key 0x6970763672656164796c6f676f336465736362636f757432 \\\n    \
        --integrity-algorithm hmac-sha1 --integrity-key 0x6970763672656164796c6f67736861316f757432 --sa-name sa1\n  \
        xipsec sp add --sp-source=2001:db8:1::/64 --sp-destination=2002:db8:1::/64 --source-port=23 \\\n    \
        --destination-port=25 --upper-layer-protocol=tcp --flow-direction=out --action=ipsec \\\n    \
        --sp-mode=transport --sa-name=sa1 --sp-name=sp1\n  \
        xipsec sa list --formatter json"
)]
pub struct Cli {
    /// Control socket of the daemon to talk to (for `daemon`: the socket to serve).
    #[arg(
        long,
        global = true,
        env = "XIPSEC_SOCKET",
        value_name = "PATH",
        default_value = DEFAULT_SOCKET
    )]
    pub socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Security associations (SAs): how traffic is protected.
    #[command(subcommand)]
    Sa(SaCommand),
    /// Security policies (SPs): which traffic is protected, passed in clear or dropped.
    #[command(subcommand)]
    Sp(SpCommand),
    /// Apply adds and removes from a file of commands as one change: all or nothing.
    #[command(long_about = super::batch::LONG_ABOUT, after_help = super::batch::EXAMPLE)]
    Batch(super::batch::BatchArgs),
    /// Packets dropped by the datapath, per reason (per-SA and per-SP counters are in `list`).
    Stats(OutputArgs),
    /// What the daemon is serving: socket, state file, datapath, interfaces, number of SAs and SPs.
    Status(OutputArgs),
    /// Run the daemon: attach the datapath, restore the saved state and serve the CLI.
    Daemon(DaemonArgs),
    /// Print a shell completion script to standard output.
    Completions {
        /// Shell to generate completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The source document's `esxcli network ip ipsec add` (missing `sa`/`sp`): answered with a
    /// hint.
    #[command(hide = true)]
    Add(Misplaced),
    #[command(hide = true)]
    Remove(Misplaced),
    #[command(hide = true)]
    List(Misplaced),
    /// Make the running SAs and SPs exactly those a file describes: the difference, as one
    /// change.
    #[command(long_about = super::apply::LONG_ABOUT, after_help = super::apply::EXAMPLE)]
    Apply(super::apply::ApplyArgs),
    /// Print the running configuration as an `apply` file (keys redacted unless --with-keys).
    #[command(long_about = super::export::LONG_ABOUT)]
    Export(super::export::ExportArgs),
    /// What the kernel's classifier does with one packet, and why; beside the reference model's
    /// answer (a disagreement is a bug). Changes nothing: no counter, cache or state moves.
    #[command(after_help = super::explain::EXAMPLE)]
    Explain(super::explain::ExplainCommand),
    /// Write the man pages or the shell completions generated from these definitions (used by
    /// `cargo xtask dist`, so they always match the binary).
    #[command(hide = true, subcommand)]
    Generate(super::generate::Generate),
    /// IKEv2: peers to negotiate SAs with (`ike peer add|list|remove`) and the IKE SAs
    /// (`ike sa list`); policies use a peer with `sp add --ike-peer NAME`.
    #[command(subcommand)]
    Ike(super::ike::IkeCommand),
}

/// Everything after a misplaced `add`/`remove`/`list`, kept to pick the hint.
#[derive(Debug, Args)]
pub struct Misplaced {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub rest: Vec<String>,
}

/// `xipsec sa ...`
#[derive(Debug, Subcommand)]
pub enum SaCommand {
    /// List every SA usable by policies, with counters (keys are never shown).
    List(OutputArgs),
    /// Add an SA. Every option is required, except --encryption-key with `null` encryption and
    /// the integrity options with AES-GCM (which refuses them).
    #[command(after_help = sa_add_after_help())]
    Add(Box<SaAdd>),
    /// Remove an SA: by --sa-name, by --sa-source + --sa-destination + --sa-spi, or all of them
    /// with --remove-all. Fails if the SA is in use by an SP (remove the SP first).
    Remove(SaRemove),
    /// Empty an inbound SA's anti-replay window, for a peer that restarted at sequence 1.
    #[command(
        name = "reset-replay",
        long_about = "Empty an inbound SA's anti-replay window and forget its persisted replay \
            ceiling.\n\n\
            xipsec never accepts an ESP sequence number twice, also not across daemon restarts, \
            kill -9 or removing and re-adding the SA with the same SPI and keys: each inbound SA's \
            highest acceptable number is written ahead to {state-dir}/esp-replay.json. A peer that \
            keeps no state (manual keys on Linux XFRM, many test tools) starts again at sequence \
            number 1 after its own restart, and everything it sends is then refused as replayed \
            (esp_replay_drops in `xipsec stats`, replay_drops in `xipsec sa list`). This command \
            lets such a peer in again.\n\n\
            What it costs: every packet of this SA captured before the reset becomes acceptable \
            again, once. Anyone who recorded the SA's traffic can replay it. Prefer new keys (sa \
            remove, then sa add with a new SPI and keys); reset only when the peer cannot rekey."
    )]
    ResetReplay(SaResetReplay),
    /// Write every SA with its keys as Wireshark's ESP SA table (`esp_sa`), for decrypting
    /// captures; root only, the file is created 0600.
    Export(super::wireshark::SaExportArgs),
}

/// `xipsec sa reset-replay`.
#[derive(Debug, Args)]
pub struct SaResetReplay {
    /// Required. Name of the inbound SA whose window to empty.
    #[arg(short = 'n', long, value_name = "NAME")]
    pub sa_name: Option<String>,
}

/// `xipsec sp ...`
#[derive(Debug, Subcommand)]
pub enum SpCommand {
    /// List every SP, with hit counters.
    List(OutputArgs),
    /// Add an SP. Its SA must exist first.
    Add(Box<SpAdd>),
    /// Remove an SP by --sp-name, or every SP with --remove-all.
    Remove(SpRemove),
}

/// Output format of list-like commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Formatter {
    /// Aligned columns for people.
    #[default]
    Table,
    /// A JSON array of objects (see SCHEMA.md).
    Json,
    /// esxcli-style XML.
    Xml,
    /// Comma-separated values with a header line.
    Csv,
    /// One `Type.field.type=value` line per field, records separated by a blank line.
    Keyvalue,
}

/// `--formatter`, shared by list, stats and status.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Formatter::Table)]
    pub formatter: Formatter,
}

/// What `sa add --help` prints after the options: RFC 4106's warning about AES-GCM with static
/// keys, which the CLI also prints when such an SA is added.
fn sa_add_after_help() -> String {
    format!(
        "AES-GCM with manual keys (aes128-gcm, aes256-gcm):\n  warning: {}",
        crate::model::GCM_STATIC_KEY_WARNING
    )
}

/// `xipsec sa add`: raw option strings, validated by the model.
#[derive(Debug, Args)]
pub struct SaAdd {
    /// Required. Source IPv6 address; `any` is allowed in transport mode only.
    #[arg(short = 's', long, value_name = "ADDR")]
    pub sa_source: Option<String>,
    /// Required. Destination IPv6 address; `any` is allowed in transport mode only.
    #[arg(short = 'd', long, value_name = "ADDR")]
    pub sa_destination: Option<String>,
    /// Required. `transport` or `tunnel`.
    #[arg(short = 'm', long, value_name = "MODE")]
    pub sa_mode: Option<String>,
    /// Required. Security parameter index: `0x` and up to 8 hex digits, 0x100 or more (0-255 are
    /// reserved by RFC 4303); unique among SAs.
    #[arg(short = 'p', long, value_name = "0xHEX")]
    pub sa_spi: Option<String>,
    /// Required. ESXi's three: `3des-cbc`, `aes128-cbc` or `null`; and beyond ESXi (xipsec
    /// only): `aes256-cbc` (RFC 3602), `aes128-gcm` and `aes256-gcm` (AES-GCM, RFC 4106, 16-byte
    /// ICV: they authenticate by themselves and refuse --integrity-algorithm; see the RFC 4106
    /// warning below).
    #[arg(short = 'e', long, value_name = "ALG")]
    pub encryption_algorithm: Option<String>,
    /// Required unless the algorithm is `null` (an error with `null`). `0x` and an even number of
    /// hex digits, or ASCII text; aes128-cbc takes 16 bytes, aes256-cbc 32, 3des-cbc 24 (K1≠K2,
    /// K2≠K3); aes128-gcm 20 and aes256-gcm 36: the AES key followed by a 4-byte salt (RFC 4106).
    #[arg(short = 'k', long, value_name = "KEY")]
    pub encryption_key: Option<String>,
    /// Required, except with aes128-gcm and aes256-gcm, which refuse it. `hmac-sha1` or
    /// `hmac-sha2-256` (integrity is never null; `sa list` shows `none` for AES-GCM).
    #[arg(short = 'i', long, value_name = "ALG")]
    pub integrity_algorithm: Option<String>,
    /// Required with --integrity-algorithm (refused with AES-GCM). `0x` hex or ASCII text;
    /// hmac-sha1 takes 20 bytes, hmac-sha2-256 32 bytes.
    #[arg(short = 'K', long, value_name = "KEY")]
    pub integrity_key: Option<String>,
    /// Required. Name of the SA; unique.
    #[arg(short = 'n', long, value_name = "NAME")]
    pub sa_name: Option<String>,
    /// Optional, xipsec only (not an ESXi option). Send and accept this SA's ESP inside UDP
    /// (RFC 3948): `4500` (that port at both ends) or `SRC:DST` (the SA source's port, the SA
    /// destination's), 1 to 65535; needs both addresses (not `any`). Without it, plain ESP; an
    /// SA accepts only its own shape. IKE normally sets this; manual keys can use it to reach a
    /// peer that only speaks ESP in UDP. `sa list` shows it last, as `SRC:DST` (`UDP Encap`).
    /// `sa export --wireshark` has no column for it
    /// (Wireshark's esp_sa table has none): Wireshark decodes ESP in UDP 4500 by itself, and
    /// another port with `tshark -d udp.port==PORT,udpencap`.
    #[arg(long, value_name = "PORTS")]
    pub udp_encapsulation: Option<String>,
}

impl From<SaAdd> for SaAddArgs {
    fn from(a: SaAdd) -> Self {
        Self {
            sa_source: a.sa_source,
            sa_destination: a.sa_destination,
            sa_mode: a.sa_mode,
            sa_spi: a.sa_spi,
            encryption_algorithm: a.encryption_algorithm,
            encryption_key: a.encryption_key,
            integrity_algorithm: a.integrity_algorithm,
            integrity_key: a.integrity_key,
            sa_name: a.sa_name,
            udp_encapsulation: a.udp_encapsulation,
        }
    }
}

/// `xipsec sa remove`.
#[derive(Debug, Args)]
pub struct SaRemove {
    /// Name of the SA to remove.
    #[arg(short = 'n', long, value_name = "NAME")]
    pub sa_name: Option<String>,
    /// Source address of the SA to remove (with --sa-destination and --sa-spi).
    #[arg(short = 's', long, value_name = "ADDR")]
    pub sa_source: Option<String>,
    /// Destination address of the SA to remove (with --sa-source and --sa-spi).
    #[arg(short = 'd', long, value_name = "ADDR")]
    pub sa_destination: Option<String>,
    /// SPI of the SA to remove (with --sa-source and --sa-destination).
    #[arg(short = 'p', long, value_name = "0xHEX")]
    pub sa_spi: Option<String>,
    /// Remove every SA; atomic: if any SA is in use, nothing is removed.
    #[arg(long)]
    pub remove_all: bool,
}

impl From<SaRemove> for SaRemoveArgs {
    fn from(a: SaRemove) -> Self {
        Self {
            sa_name: a.sa_name,
            sa_source: a.sa_source,
            sa_destination: a.sa_destination,
            sa_spi: a.sa_spi,
            remove_all: a.remove_all,
        }
    }
}

/// `xipsec sp add`: raw option strings, validated by the model.
#[derive(Debug, Args)]
pub struct SpAdd {
    /// Required. Source prefix `ADDR/LEN`, or `any` (= ::/0); no host bits beyond LEN.
    #[arg(long, value_name = "PREFIX")]
    pub sp_source: Option<String>,
    /// Required. Destination prefix `ADDR/LEN`, or `any` (= ::/0); no host bits beyond LEN.
    #[arg(long, value_name = "PREFIX")]
    pub sp_destination: Option<String>,
    /// Required. 0-65535 or `any` (0 means any); must be any with protocol any or icmp6.
    #[arg(long, value_name = "PORT")]
    pub source_port: Option<String>,
    /// Required. 0-65535 or `any` (0 means any); with icmp6 it is the ICMPv6 type; must be any
    /// with protocol any.
    #[arg(long, value_name = "PORT")]
    pub destination_port: Option<String>,
    /// `tcp`, `udp`, `icmp6` or `any` [default: any].
    #[arg(long, value_name = "PROTO")]
    pub upper_layer_protocol: Option<String>,
    /// Required. `in` or `out` (a flow in both directions needs two policies).
    #[arg(long, value_name = "DIR")]
    pub flow_direction: Option<String>,
    /// `none` (pass in clear), `discard` (drop) or `ipsec` (protect with the SA) [default: ipsec].
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// `transport` or `tunnel`; defaults to the SA's mode, and must equal it if given.
    #[arg(long, value_name = "MODE")]
    pub sp_mode: Option<String>,
    /// Name of the SA to use: required with action ipsec; optional otherwise, and must exist if
    /// given.
    #[arg(long, value_name = "NAME")]
    pub sa_name: Option<String>,
    /// Required. Name of the SP; unique.
    #[arg(long, value_name = "NAME")]
    pub sp_name: Option<String>,
    /// Instead of --sa-name (action ipsec only): the IKE peer (`ike peer add`) that negotiates
    /// this policy's SAs; its traffic is dropped until a CHILD_SA exists (xipsec extension).
    #[arg(long, value_name = "PEER")]
    pub ike_peer: Option<String>,
    /// 0-65535 (extension). Policies with a priority rank before all others, lower first;
    /// the rest rank by specificity, then age.
    #[arg(long, value_name = "N")]
    pub priority: Option<String>,
}

impl From<SpAdd> for SpAddArgs {
    fn from(a: SpAdd) -> Self {
        Self {
            sp_source: a.sp_source,
            sp_destination: a.sp_destination,
            source_port: a.source_port,
            destination_port: a.destination_port,
            upper_layer_protocol: a.upper_layer_protocol,
            flow_direction: a.flow_direction,
            action: a.action,
            sp_mode: a.sp_mode,
            sa_name: a.sa_name,
            sp_name: a.sp_name,
            priority: a.priority,
        }
    }
}

/// `xipsec sp remove`.
#[derive(Debug, Args)]
pub struct SpRemove {
    /// Name of the SP to remove.
    #[arg(long, value_name = "NAME")]
    pub sp_name: Option<String>,
    /// Remove every SP.
    #[arg(long)]
    pub remove_all: bool,
    /// Not an option of `sp remove` (the source document's typo): answered with a hint.
    #[arg(long, value_name = "NAME", hide = true)]
    pub sa_name: Option<String>,
}

impl From<SpRemove> for SpRemoveArgs {
    fn from(a: SpRemove) -> Self {
        Self {
            sp_name: a.sp_name,
            remove_all: a.remove_all,
        }
    }
}

/// `xipsec daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Interface to attach the datapath to (XDP ingress, TC egress); repeat for several.
    #[arg(
        long = "interface",
        value_name = "IFACE",
        required_unless_present = "no_datapath"
    )]
    pub interfaces: Vec<String>,
    /// How XDP is attached.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,
    /// Directory of the persisted state (state.json, mode 0600).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// bpffs directory where programs and maps are pinned.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Receive coalescing of the ESP engine, in microseconds: while a stream of ESP arrives, wait
    /// this long between rounds so each handles more packets (fewer wake-ups and TCP ACKs, a
    /// little more latency); 0 disables.
    #[arg(
        long,
        value_name = "US",
        env = "XIPSEC_ESP_RX_COALESCE_US",
        default_value_t = DEFAULT_RX_COALESCE.as_micros() as u32,
        value_parser = clap::value_parser!(u32).range(0..=10_000)
    )]
    pub esp_rx_coalesce_us: u32,
    /// Volume limit of 3DES SAs, in 64-bit blocks per SA and direction: past it the SA stops
    /// protecting and accepting traffic (dropped and counted as esp_volume_limit) and must be
    /// replaced. 3DES's 64-bit blocks leak plaintext near 2^32 blocks under one key (Sweet32);
    /// the default is 2^30 (8 GiB). May only be lowered. RFC 8221 discourages 3DES (SHOULD
    /// NOT): prefer aes128-cbc.
    #[arg(
        long,
        value_name = "BLOCKS",
        default_value_t = DEFAULT_TDES_BLOCK_LIMIT,
        value_parser = clap::value_parser!(u64).range(1..=DEFAULT_TDES_BLOCK_LIMIT)
    )]
    pub tdes_block_limit: u64,
    /// Also serve members of GROUP (primary or supplementary) on the control socket; root is
    /// always served, anyone else is refused. The socket file is created 0600: give the group
    /// access to it (and its directory) as well.
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,
    /// Manage and persist state only; attach nothing (tests and staging). --interface is then
    /// optional.
    #[arg(long)]
    pub no_datapath: bool,
    /// Serve Prometheus metrics (`GET /metrics`, text format 0.0.4) on ADDR:PORT, e.g.
    /// 127.0.0.1:9611. Off by default. Only loopback addresses unless --metrics-allow-remote:
    /// the endpoint has no authentication.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Allow --metrics-listen on a non-loopback address (put a firewall or a proxy in front).
    #[arg(long, requires = "metrics_listen")]
    pub metrics_allow_remote: bool,
    /// Per-SP series only for the first N SPs (creation order); the others are summed into
    /// xipsec_sp_other_packets_total and xipsec_sp_other_bytes_total.
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::daemon::metrics::DEFAULT_MAX_SPS
    )]
    pub metrics_max_sps: u64,
    /// How the ESP engine sends ESP: `xdp` through the AF_XDP sockets it receives on (its own
    /// Ethernet and IPv6 headers, next hop from the kernel's neighbour table; no qdisc, TC egress
    /// or packet taps on the sending interface), falling back to the raw socket per packet when
    /// the neighbour is unknown or the packet needs fragmenting; `raw` always through the raw
    /// socket (the kernel's IPv6 output: visible to tcpdump on this host).
    #[arg(
        long,
        value_enum,
        value_name = "PATH",
        env = "XIPSEC_ESP_TX",
        default_value_t = EspTx::Xdp
    )]
    pub esp_tx: EspTx,
    /// ESP in UDP (RFC 3948) in GSO frames: `on` sends a run of ESP-in-UDP packets of one SA as
    /// one skb of up to 64 KiB (segmented by the device or the kernel before the wire, so the
    /// peer sees the same packets) and receives such super-packets on a UDP GRO socket per local
    /// address and port of the encapsulated SAs; `off` sends and receives packet by packet.
    /// Peers on a veth or another virtual link that keeps GSO whole must be xipsec with this
    /// path (or any RFC 3948 receiver on a kernel UDP socket, such as strongSwan).
    #[arg(
        long,
        value_enum,
        value_name = "ON_OFF",
        env = "XIPSEC_ESP_GSO",
        default_value_t = EspGso::On
    )]
    pub esp_gso: EspGso,
}

/// `--esp-gso`: UDP GSO/GRO for ESP in UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EspGso {
    /// GSO frames out, GRO super-packets in.
    On,
    /// One packet per skb.
    Off,
}

/// `--esp-tx`: the ESP engine's send path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EspTx {
    /// AF_XDP transmit rings where possible, the raw socket otherwise.
    Xdp,
    /// The raw socket only.
    Raw,
}

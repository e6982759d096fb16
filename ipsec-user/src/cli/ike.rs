//! `xipsec ike ...`: IKEv2 peers and IKE SAs; and `sp add --ike-peer`.
//!
//! Contract: the same conventions as `sa`/`sp`: raw option strings go to the daemon, which
//! validates them (the model, then the IKE core's proposal parsers and PSK rule) and answers
//! one `error:` line naming the option, changing nothing; adds and removes print nothing;
//! listings take `--formatter` (fields in `SCHEMA.md`) and never carry a key.

use std::path::Path;

use clap::{Args, Subcommand};

use super::args::{OutputArgs, SpAdd};
use super::format::{self, Column, Layout, Row, Value};
use super::{Failure, call, change, print, unexpected};
use crate::daemon::protocol::{Change, IkeSaEntry, PeerEntry, Request, Response};
use crate::model::{IkeSpAddArgs, PeerAddArgs, PeerRemoveArgs};

/// `xipsec ike ...`
#[derive(Debug, Subcommand)]
pub enum IkeCommand {
    /// IKE peers: who to negotiate SAs with, and how.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// IKE SAs: the negotiations running with the peers.
    #[command(subcommand)]
    Sa(IkeSaCommand),
}

/// `xipsec ike peer ...`
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Add a peer; policies name it with `sp add --ike-peer NAME`.
    #[command(after_help = PEER_ADD_EXAMPLE)]
    Add(Box<PeerAdd>),
    /// List the peers (never the PSK).
    List(OutputArgs),
    /// Remove a peer and delete its SAs; refused while a policy names it.
    Remove(PeerRemove),
}

/// `xipsec ike sa ...`
#[derive(Debug, Subcommand)]
pub enum IkeSaCommand {
    /// List the IKE SAs: peer, role, state, SPIs, suite, age, rekey and expiry times (of the
    /// IKE SA and each CHILD_SA), CHILD_SAs, message counters.
    List(OutputArgs),
    /// Rekey a peer's SAs now, as their lifetimes would (like `swanctl --rekey`).
    #[command(after_help = REKEY_HELP)]
    Rekey(IkeSaRekey),
}

const REKEY_HELP: &str = "Make before break (RFC 7296 §2.8): the new SAs are installed before \
    the old ones are deleted, and traffic moves without a gap. Nothing is printed; the log says \
    `ike: rekey asked for`, then `ike: child sa installed` (or `ike: ike sa rekeyed`). If the \
    peer rekeys the same SA at the same moment, the collision is resolved as RFC 7296 §2.8.1 \
    says (logged as `ike: simultaneous rekey`).\n\n\
    Example:\n  xipsec ike sa rekey --peer-name b\n  xipsec ike sa rekey --peer-name b --ike";

/// `xipsec ike sa rekey`.
#[derive(Debug, Args)]
pub struct IkeSaRekey {
    /// Required. Name of the peer whose established IKE SA (or its CHILD_SAs) to rekey.
    #[arg(long, value_name = "NAME")]
    pub peer_name: Option<String>,
    /// Rekey every CHILD_SA of the peer's IKE SA (the default).
    #[arg(long, conflicts_with = "ike")]
    pub child: bool,
    /// Rekey the IKE SA itself (its CHILD_SAs move to the new one unchanged).
    #[arg(long)]
    pub ike: bool,
}

const PEER_ADD_EXAMPLE: &str = "Example (the peer runs the mirror image):\n  \
    xipsec ike peer add --peer-name b --local fd00::1 --remote fd00::2 --auth psk \\\n    \
    --psk 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n  \
    xipsec sp add --sp-source fd00::1/128 --sp-destination fd00::2/128 --source-port any \\\n    \
    --destination-port any --upper-layer-protocol tcp --flow-direction out --action ipsec \\\n    \
    --sp-mode transport --ike-peer b --sp-name to-b\n\n\
    Until a CHILD_SA is negotiated the policy's traffic is dropped (counted as esp_no_sa).";

/// `xipsec ike peer add`: raw option strings, validated by the daemon.
#[derive(Debug, Args)]
pub struct PeerAdd {
    /// Required. Name of the peer (1 to 51 characters from A-Z a-z 0-9 _ . -); unique.
    #[arg(long, value_name = "NAME")]
    pub peer_name: Option<String>,
    /// Required. Our IPv6 address: IKE is sent from it (UDP 500/4500), and it is the SAs' local end.
    #[arg(long, value_name = "ADDR")]
    pub local: Option<String>,
    /// Required. The peer's IPv6 address (its identity, ID_IPV6_ADDR).
    #[arg(long, value_name = "ADDR")]
    pub remote: Option<String>,
    /// Required. `psk` (pre-shared key, RFC 7296 §2.15), the only method.
    #[arg(long, value_name = "METHOD")]
    pub auth: Option<String>,
    /// Required. The pre-shared key: `0x` and hex digits, or ASCII text; at least 16 bytes.
    #[arg(long, value_name = "KEY")]
    pub psk: Option<String>,
    /// IKE proposals, strongSwan's syntax, best first [default: aes128-sha256-x25519].
    #[arg(long, value_name = "LIST")]
    pub ike_proposal: Option<String>,
    /// ESP proposals, strongSwan's syntax, best first [default: aes128gcm16,aes128-sha256].
    #[arg(long, value_name = "LIST")]
    pub esp_proposal: Option<String>,
    /// Seconds a CHILD_SA lives, 10 or more [default: 3600].
    #[arg(long, value_name = "SECONDS")]
    pub lifetime: Option<String>,
    /// Seconds an IKE SA lives, 10 or more [default: 14400].
    #[arg(long, value_name = "SECONDS")]
    pub ike_lifetime: Option<String>,
    /// Seconds before the end of a lifetime at which the SA is rekeyed [default: 540, or a
    /// third of a shorter lifetime].
    #[arg(long, value_name = "SECONDS")]
    pub rekey_margin: Option<String>,
    /// Seconds of silence before a liveness check; 0 = none [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub dpd: Option<String>,
    /// `always` (at daemon start and after this command), `on-demand` (on the first packet
    /// dropped for want of an SA) or `never` (the peer initiates) [default: always].
    #[arg(long, value_name = "WHEN")]
    pub initiate: Option<String>,
}

impl From<PeerAdd> for PeerAddArgs {
    fn from(a: PeerAdd) -> Self {
        Self {
            peer_name: a.peer_name,
            local: a.local,
            remote: a.remote,
            auth: a.auth,
            psk: a.psk,
            ike_proposal: a.ike_proposal,
            esp_proposal: a.esp_proposal,
            lifetime: a.lifetime,
            ike_lifetime: a.ike_lifetime,
            rekey_margin: a.rekey_margin,
            dpd: a.dpd,
            initiate: a.initiate,
        }
    }
}

/// `xipsec ike peer remove`.
#[derive(Debug, Args)]
pub struct PeerRemove {
    /// Required. Name of the peer to remove.
    #[arg(long, value_name = "NAME")]
    pub peer_name: Option<String>,
}

/// `ike peer list`.
pub const PEER_LAYOUT: Layout = Layout {
    type_name: "IkePeer",
    columns: &[
        col("name", "Name"),
        col("local", "Local"),
        col("remote", "Remote"),
        col("auth", "Auth"),
        col("ike_proposal", "IKE Proposal"),
        col("esp_proposal", "ESP Proposal"),
        col("lifetime", "Lifetime"),
        col("ike_lifetime", "IKE Lifetime"),
        col("rekey_margin", "Rekey Margin"),
        col("dpd", "DPD"),
        col("initiate", "Initiate"),
        col("in_use_by", "In Use By"),
        col("sas", "SAs"),
    ],
    single: false,
};

/// `ike sa list`.
pub const IKE_SA_LAYOUT: Layout = Layout {
    type_name: "IkeSecurityAssociation",
    columns: &[
        col("peer", "Peer"),
        col("role", "Role"),
        col("state", "State"),
        col("spi_i", "SPIi"),
        col("spi_r", "SPIr"),
        col("suite", "Suite"),
        col("local", "Local"),
        col("remote", "Remote"),
        col("encapsulated", "UDP Encap"),
        col("established_seconds", "Established s"),
        col("rekey_seconds", "Rekey In s"),
        col("expire_seconds", "Expires In s"),
        col("child_sas", "Child SAs"),
        col("child_sa_rekey_seconds", "Child Rekey In s"),
        col("child_sa_expire_seconds", "Child Expires In s"),
        col("messages_received", "Msgs In"),
        col("messages_sent", "Msgs Out"),
    ],
    single: false,
};

const fn col(key: &'static str, header: &'static str) -> Column {
    Column {
        key,
        header,
        null_text: "",
    }
}

fn peer_row(entry: &PeerEntry) -> Row {
    let p = &entry.peer;
    vec![
        Value::Str(p.name.clone()),
        Value::Str(p.local.to_string()),
        Value::Str(p.remote.to_string()),
        Value::Str(entry.auth.clone()),
        Value::Str(p.ike_proposal.clone()),
        Value::Str(p.esp_proposal.clone()),
        Value::Int(u64::from(p.lifetime)),
        Value::Int(u64::from(p.ike_lifetime)),
        Value::Int(u64::from(p.rekey_margin)),
        Value::Int(u64::from(p.dpd)),
        Value::Str(p.initiate.as_str().to_owned()),
        Value::List(entry.in_use_by.clone()),
        Value::List(entry.sas.clone()),
    ]
}

fn ike_sa_row(s: &IkeSaEntry) -> Row {
    let seconds = |v: Option<u64>| v.map_or(Value::Null, Value::Int);
    vec![
        Value::Str(s.peer.clone()),
        Value::Str(s.role.clone()),
        Value::Str(s.state.clone()),
        Value::Str(s.spi_i.clone()),
        Value::Str(s.spi_r.clone()),
        Value::Str(s.suite.clone()),
        Value::Str(s.local.clone()),
        Value::Str(s.remote.clone()),
        Value::Str(if s.encapsulated { "yes" } else { "no" }.to_owned()),
        seconds(s.established_seconds),
        seconds(s.rekey_seconds),
        seconds(s.expire_seconds),
        Value::List(s.child_sas.clone()),
        Value::List(s.child_sa_rekey_seconds.clone()),
        Value::List(s.child_sa_expire_seconds.clone()),
        Value::Int(s.messages_received),
        Value::Int(s.messages_sent),
    ]
}

/// Run `xipsec ike ...`.
pub(super) fn run(socket: &Path, command: IkeCommand) -> Result<(), Failure> {
    match command {
        IkeCommand::Peer(PeerCommand::Add(a)) => change(socket, &Request::PeerAdd((*a).into())),
        IkeCommand::Peer(PeerCommand::Remove(a)) => change(
            socket,
            &Request::PeerRemove(PeerRemoveArgs {
                peer_name: a.peer_name,
            }),
        ),
        IkeCommand::Peer(PeerCommand::List(out)) => match call(socket, &Request::PeerList)? {
            Response::PeerList(peers) => print(&format::render(
                out.formatter,
                &PEER_LAYOUT,
                &peers.iter().map(peer_row).collect::<Vec<_>>(),
            )),
            other => Err(unexpected(&other)),
        },
        IkeCommand::Sa(IkeSaCommand::List(out)) => match call(socket, &Request::IkeSaList)? {
            Response::IkeSaList(sas) => print(&format::render(
                out.formatter,
                &IKE_SA_LAYOUT,
                &sas.iter().map(ike_sa_row).collect::<Vec<_>>(),
            )),
            other => Err(unexpected(&other)),
        },
        IkeCommand::Sa(IkeSaCommand::Rekey(a)) => {
            let request = Request::IkeSaRekey {
                peer_name: a.peer_name,
                ike: a.ike,
            };
            match call(socket, &request)? {
                Response::IkeRekeyStarted { .. } => Ok(()),
                other => Err(unexpected(&other)),
            }
        }
    }
}

/// `sp add`: with `--ike-peer`, the IKE form of the request.
pub(super) fn sp_add_request(a: SpAdd) -> Request {
    match sp_add_change(a) {
        Change::SpAddIke(args) => Request::SpAddIke(args),
        Change::SpAdd(args) => Request::SpAdd(args),
        _ => unreachable!("sp_add_change makes an sp add"),
    }
}

/// `sp add` as a batch change: with `--ike-peer`, [`Change::SpAddIke`].
pub(super) fn sp_add_change(mut a: SpAdd) -> Change {
    match a.ike_peer.take() {
        Some(peer) => Change::SpAddIke(IkeSpAddArgs {
            sp: a.into(),
            ike_peer: Some(peer),
        }),
        None => Change::SpAdd(a.into()),
    }
}

/// An `ike` command line of a batch file: `ike peer add` and `ike peer remove` only.
pub(super) fn batch_change(command: IkeCommand) -> Result<Change, String> {
    match command {
        IkeCommand::Peer(PeerCommand::Add(a)) => Ok(Change::PeerAdd((*a).into())),
        IkeCommand::Peer(PeerCommand::Remove(a)) => Ok(Change::PeerRemove(PeerRemoveArgs {
            peer_name: a.peer_name,
        })),
        IkeCommand::Peer(PeerCommand::List(_)) => Err("ike peer list".to_owned()),
        IkeCommand::Sa(IkeSaCommand::List(_)) => Err("ike sa list".to_owned()),
        IkeCommand::Sa(IkeSaCommand::Rekey(_)) => Err("ike sa rekey".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::batch::parse;
    use crate::cli::export::render;
    use crate::daemon::{apply, batch};
    use crate::model::Spd;

    const RUNNING: &str = "\
ike peer add --peer-name b --local fd00::1 --remote fd00::2 --auth psk --psk 0x000102030405060708090a0b0c0d0e0f --lifetime 60 --dpd 0
sp add --sp-name o --sp-source fd00::1/128 --sp-destination fd00::2/128 --source-port any --destination-port any --upper-layer-protocol tcp --flow-direction out --ike-peer b
sp add --sp-name i --sp-source fd00::2/128 --sp-destination fd00::1/128 --source-port any --destination-port any --upper-layer-protocol tcp --flow-direction in --ike-peer b
";

    fn running() -> Spd {
        let items = parse(RUNNING).expect("the fixture parses");
        batch::apply(&Spd::new(), &items)
            .expect("the fixture applies")
            .0
    }

    #[test]
    fn peers_export_redacted_and_apply_as_no_difference() {
        let spd = running();
        let text = render(&apply::configuration(&spd, 1, false));
        assert!(text.contains("--psk REDACTED"), "{text}");
        assert!(!text.contains("000102030405"), "{text}");
        assert_eq!(text.matches("--ike-peer b").count(), 2, "{text}");
        let plan = apply::plan(&spd, &parse(&text).expect("reparses")).expect("plans");
        assert!(plan.differences.is_empty(), "{:?}", plan.differences);
        // A changed peer is replaced, and the policies that name it are added again with it.
        let changed = text.replace("--dpd 0", "--dpd 5");
        let plan = apply::plan(&spd, &parse(&changed).expect("reparses")).expect("plans");
        let kinds: Vec<String> = plan
            .differences
            .iter()
            .map(|d| format!("{} {} {:?}", d.kind, d.name, d.change))
            .collect();
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        assert!(kinds[0].starts_with("peer b Changed"), "{kinds:?}");
        let (next, _) = batch::apply(&spd, &plan.items).expect("the plan applies");
        assert_eq!(next.peer("b").map(|p| p.dpd), Some(5));
        assert_eq!(
            next.peer("b").map(|p| p.psk.clone()),
            spd.peer("b").map(|p| p.psk.clone())
        );
        // On a daemon without the peer, the placeholder is refused.
        let error =
            apply::plan(&Spd::new(), &parse(&text).expect("reparses")).expect_err("no running psk");
        assert!(error.to_string().contains("--psk: REDACTED"), "{error}");
        // With keys, the export rebuilds the peer on an empty daemon.
        let keyed = render(&apply::configuration(&spd, 1, true));
        let (copy, _) = batch::apply(&Spd::new(), &parse(&keyed).expect("reparses"))
            .expect("the keyed export applies");
        assert_eq!(copy.peers(), spd.peers());
    }
}

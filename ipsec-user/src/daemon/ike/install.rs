//! A negotiated CHILD_SA as the model's two SAs, and how the IKE core's failures and IKE SAs
//! are shown.
//!
//! Contract: [`sa_pair`] names the SAs `ike-<peer>-<spi>` (8 hex digits), sets their endpoints
//! from the IKE endpoints (inbound: peer -> us, outbound: us -> peer), and `udp_encap` from
//! `encapsulated` (RFC 3948: the IKE ports, 4500 on both sides unless a NAT moved the peer's).
//! The keys move into [`Key`]s, which wipe themselves on drop.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use crate::daemon::protocol::IkeSaEntry;
use crate::ike::{ChildSa, DirectionKeys, Failure, IkeSaInfo};
use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm, Key, Sa, UdpEncap};

/// The name of the `ike` SA with `spi` negotiated with `peer`.
pub(crate) fn sa_name(peer: &str, spi: u32) -> String {
    format!("ike-{peer}-{spi:08x}")
}

fn v6(addr: SocketAddr) -> Option<Ipv6Addr> {
    match addr.ip() {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

/// The (inbound, outbound) SAs of `child`; `None` for an IPv4 CHILD_SA, which xipsec's IPv6
/// datapath cannot carry.
pub(crate) fn sa_pair(child: &ChildSa) -> Option<(Sa, Sa)> {
    let (local, remote) = (v6(child.local)?, v6(child.remote)?);
    let sa = |spi: u32, keys: &DirectionKeys, source, destination, ports: (u16, u16)| Sa {
        id: 0,
        name: sa_name(&child.peer, spi),
        source: Some(source),
        destination: Some(destination),
        mode: child.mode,
        spi,
        encryption: child.suite.encryption,
        encryption_key: Key::new(keys.encryption.to_vec()),
        integrity: child.suite.integrity,
        integrity_key: Key::new(keys.integrity.to_vec()),
        udp_encap: child.encapsulated.then_some(UdpEncap {
            source_port: ports.0,
            destination_port: ports.1,
        }),
    };
    let (lp, rp) = (child.local.port(), child.remote.port());
    Some((
        sa(child.inbound_spi, &child.inbound, remote, local, (rp, lp)),
        sa(child.outbound_spi, &child.outbound, local, remote, (lp, rp)),
    ))
}

/// The RFC 7296 notify name an operator searches for (`AUTHENTICATION_FAILED`,
/// `NO_PROPOSAL_CHOSEN`, ...), for the log line of a failure.
pub(crate) fn failure_code(failure: &Failure) -> &'static str {
    match failure {
        Failure::PeerAuthentication | Failure::AuthenticationRefused => "AUTHENTICATION_FAILED",
        Failure::NoIkeProposal | Failure::NoEspProposal => "NO_PROPOSAL_CHOSEN",
        Failure::TsUnacceptable => "TS_UNACCEPTABLE",
        Failure::Mode(_) => "USE_TRANSPORT_MODE",
        Failure::PeerError(notify) => notify.name(),
        Failure::Protocol(_) => "INVALID_SYNTAX",
        Failure::Timeout(_) => "TIMEOUT",
    }
}

/// strongSwan's keyword of an encryption algorithm.
fn strongswan_encryption(e: EncryptionAlgorithm) -> &'static str {
    match e {
        EncryptionAlgorithm::Aes128Cbc => "aes128",
        EncryptionAlgorithm::Aes256Cbc => "aes256",
        EncryptionAlgorithm::Aes128Gcm => "aes128gcm16",
        EncryptionAlgorithm::Aes256Gcm => "aes256gcm16",
        EncryptionAlgorithm::TripleDesCbc => "3des",
        EncryptionAlgorithm::Null => "null",
    }
}

/// One line of `ike sa list`: ages and times to come in whole seconds, from the core's
/// timers (so a rekey's jitter shows).
pub(crate) fn ike_sa_entry(info: &IkeSaInfo, now: Instant) -> IkeSaEntry {
    let established = info
        .established
        .map(|t| now.saturating_duration_since(t).as_secs());
    let until = |at: Instant| at.saturating_duration_since(now).as_secs();
    let child_until =
        |at: Option<Instant>| at.map_or_else(|| "-".to_owned(), |at| until(at).to_string());
    IkeSaEntry {
        peer: info.peer.clone(),
        role: if info.initiator {
            "initiator"
        } else {
            "responder"
        }
        .to_owned(),
        state: match info.state {
            _ if info.retiring => "retiring",
            crate::ike::SaState::InitSent => "init-sent",
            crate::ike::SaState::HalfOpen => "half-open",
            crate::ike::SaState::AuthSent => "auth-sent",
            crate::ike::SaState::Established => "established",
            crate::ike::SaState::Deleting => "deleting",
            #[allow(unreachable_patterns, reason = "the core may add states")]
            _ => "other",
        }
        .to_owned(),
        spi_i: hex::encode(info.spi_i),
        spi_r: hex::encode(info.spi_r),
        suite: info.suite.map_or_else(String::new, |s| {
            let integrity = match s.integrity {
                IntegrityAlgorithm::None => "",
                IntegrityAlgorithm::HmacSha1 => "-sha1",
                IntegrityAlgorithm::HmacSha256 => "-sha256",
            };
            format!(
                "{}{integrity}-prfsha256-{}",
                strongswan_encryption(s.encryption),
                s.group.name()
            )
        }),
        local: info.local.to_string(),
        remote: info.remote.to_string(),
        encapsulated: info.encapsulated,
        established_seconds: established,
        rekey_seconds: info.rekey_at.map(until),
        expire_seconds: info.expire_at.map(until),
        child_sa_rekey_seconds: info.child_timers.iter().map(|t| child_until(t.0)).collect(),
        child_sa_expire_seconds: info
            .child_timers
            .iter()
            .map(|t| child_until(Some(t.1)))
            .collect(),
        child_sas: info
            .children
            .iter()
            .map(|(i, o)| format!("{i:08x}/{o:08x}"))
            .collect(),
        messages_received: info.messages_received,
        messages_sent: info.messages_sent,
    }
}

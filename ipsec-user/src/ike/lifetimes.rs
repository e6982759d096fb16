//! The timers of an established IKE SA and its CHILD_SAs (RFC 7296 §2.8, §2.4): rekeying
//! before the lifetime ends, deleting what reached it unrekeyed, and dead peer detection.
//!
//! Contract (all of it runs from `Ike::on_timeout`, the only clock the core has):
//! - Every CHILD_SA and IKE SA is rekeyed `rekey_margin` before its lifetime ends, less a
//!   random jitter of up to a tenth of the margin ([`schedule`]), so two peers with the same
//!   settings rarely start the same rekey at once. Both sides schedule; whoever is first rekeys.
//!   A margin of more than half the lifetime is taken as half of it.
//! - A CHILD_SA that reaches its lifetime is removed at once (`ChildSaDeleted`) and the peer told
//!   (INFORMATIONAL Delete); an IKE SA that reaches its lifetime is deleted with its CHILD_SAs
//!   (a Delete sent once, unanswered, then `ChildSaDeleted`s and `IkeSaDeleted`).
//! - Dead peer detection: `dpd` after the last authenticated message from the peer (or ESP it
//!   sent, `Ike::note_inbound_esp`), with nothing of ours outstanding, an empty INFORMATIONAL
//!   request goes out; when its retransmissions run out the SA is given up like any other
//!   unanswered request (`Failed { Timeout }`, `ChildSaDeleted`s, `IkeSaDeleted`).
//! - One exchange at a time (window of one): rekeys and checks wait while a request is
//!   outstanding, so [`deadline`] leaves them out then (the answer re-arms the timer).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::config::{Lifetimes, PeerConfig, Settings};
use super::event::{Event, Output};
use super::message::ExchangeType;
use super::payload::{Delete, Payload, ProtocolId};
use super::sa::{IkeSa, RequestKind, SaState};
use super::{create_child, ike_rekey};

/// A uniformly random duration in `0..=max` (the core's RNG: `rand`).
pub(crate) fn random_up_to(max: Duration) -> Duration {
    let mut bytes = [0; 8];
    rand::fill(&mut bytes);
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(u64::from_le_bytes(bytes) % nanos.saturating_add(1))
}

/// (rekey at, expire at) for an SA of `lifetime` born `now`.
pub(crate) fn schedule(
    lifetime: Duration,
    lifetimes: &Lifetimes,
    now: Instant,
) -> (Instant, Instant) {
    let margin = lifetimes.rekey_margin.min(lifetime / 2);
    let jitter = random_up_to(margin / 10);
    (
        now + lifetime.saturating_sub(margin + jitter),
        now + lifetime,
    )
}

/// Arms an IKE SA's timers as it becomes established (IKE_AUTH or a rekey).
pub(crate) fn establish(sa: &mut IkeSa, lifetimes: &Lifetimes, now: Instant) {
    let (rekey_at, expire_at) = schedule(lifetimes.ike_lifetime, lifetimes, now);
    sa.rekey_at = Some(rekey_at);
    sa.expire_at = Some(expire_at);
    sa.last_heard = now;
}

/// A short random wait before retrying an exchange the peer answered TEMPORARY_FAILURE
/// (§2.25: "retry after a short random delay").
pub(crate) fn retry_at(settings: &Settings, now: Instant) -> Instant {
    now + settings.retransmit_base + random_up_to(settings.retransmit_base * 3)
}

/// When the next of this SA's lifetime timers is due (see the module contract).
pub(crate) fn deadline(sa: &IkeSa, lifetimes: &Lifetimes) -> Option<Instant> {
    let mut due: Vec<Instant> = sa.expire_at.into_iter().collect();
    if sa.state != SaState::Established || sa.quiet {
        return due.into_iter().min();
    }
    due.extend(sa.children.iter().map(|c| c.expire_at));
    if !sa.busy() {
        due.extend(sa.rekey_at);
        due.extend(
            sa.children
                .iter()
                .filter(|c| !c.retiring)
                .map(|c| c.rekey_at),
        );
        due.extend(lifetimes.dpd.map(|dpd| sa.last_heard + dpd));
    }
    due.into_iter().min()
}

/// Acts on the due timers of one SA. False when the SA is to be forgotten (its lifetime ended:
/// the events come from the endpoint's `forget`, quiet SAs leave none).
pub(crate) fn tick(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    others: &HashMap<[u8; 8], IkeSa>,
    now: Instant,
    out: &mut Output,
) -> bool {
    if sa.expire_at.is_some_and(|at| now >= at) {
        if !sa.quiet {
            sa.notify_delete(settings, out);
        }
        return false;
    }
    if sa.state != SaState::Established || sa.quiet {
        return true;
    }
    expire_children(settings, sa, now, out);
    if sa.busy() {
        return true;
    }
    if sa.rekey_at.is_some_and(|at| now >= at) {
        ike_rekey::start(settings, peer, sa, others, now, out);
        return true;
    }
    if let Some(child) = sa
        .children
        .iter()
        .find(|c| !c.retiring && now >= c.rekey_at)
    {
        let old = child.inbound_spi;
        create_child::start(settings, peer, sa, old, others, now, out);
        return true;
    }
    if peer
        .lifetimes
        .dpd
        .is_some_and(|dpd| now >= sa.last_heard + dpd)
    {
        sa.send_liveness(settings, now, out);
    }
    true
}

/// Removes the CHILD_SAs whose lifetime ended (reported now) and tells the peer.
fn expire_children(settings: &Settings, sa: &mut IkeSa, now: Instant, out: &mut Output) {
    let (dead, alive): (Vec<_>, Vec<_>) = std::mem::take(&mut sa.children)
        .into_iter()
        .partition(|c| now >= c.expire_at);
    sa.children = alive;
    if dead.is_empty() {
        return;
    }
    for child in &dead {
        out.event(Event::ChildSaDeleted {
            peer: sa.peer.clone(),
            inbound_spi: child.inbound_spi,
            outbound_spi: child.outbound_spi,
        });
    }
    let spis = dead.iter().map(|c| c.inbound_spi.to_be_bytes()).collect();
    let first = dead[0].inbound_spi;
    sa.send_request(
        settings,
        ExchangeType::INFORMATIONAL,
        vec![Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spis,
        })],
        RequestKind::DeleteChild { inbound_spi: first },
        now,
        out,
    );
}

//! INFORMATIONAL exchanges (RFC 7296 §1.4): Delete of the IKE SA or of CHILD_SAs, and the empty
//! liveness check.
//!
//! Contract: a request is answered in the same exchange. Deleting the IKE SA answers with an
//! empty message and drops the SA (its CHILD_SAs reported deleted first); deleting CHILD_SAs
//! answers with a Delete of our inbound SPIs of the same CHILD_SAs (§1.4.1) and reports each.

use super::config::Settings;
use super::event::{Event, Output};
use super::message::{ExchangeType, Message};
use super::payload::{Delete, Payload, ProtocolId};
use super::sa::IkeSa;

/// A request from the peer. False when it deleted the IKE SA.
pub(crate) fn request(
    settings: &Settings,
    sa: &mut IkeSa,
    message: &Message,
    out: &mut Output,
) -> bool {
    let message_id = message.header.message_id;
    let mut answer = Vec::new();
    let mut delete_ike = false;
    for p in &message.payloads {
        let Payload::Delete(d) = p else { continue };
        if d.protocol == ProtocolId::IKE {
            delete_ike = true;
        } else if d.protocol == ProtocolId::ESP {
            // The peer names its inbound SPIs: our outbound ones.
            let mut ours = Vec::new();
            for spi in &d.spis {
                let outbound = u32::from_be_bytes(*spi);
                if let Some(i) = sa.children.iter().position(|c| c.outbound_spi == outbound) {
                    let child = sa.children.remove(i);
                    ours.push(child.inbound_spi.to_be_bytes());
                    out.event(Event::ChildSaDeleted {
                        peer: sa.peer.clone(),
                        inbound_spi: child.inbound_spi,
                        outbound_spi: child.outbound_spi,
                    });
                }
            }
            if !ours.is_empty() {
                answer.push(Payload::Delete(Delete {
                    protocol: ProtocolId::ESP,
                    spis: ours,
                }));
            }
        }
    }
    if delete_ike {
        sa.respond(
            settings,
            ExchangeType::INFORMATIONAL,
            message_id,
            Vec::new(),
            out,
        );
        return false;
    }
    sa.respond(
        settings,
        ExchangeType::INFORMATIONAL,
        message_id,
        answer,
        out,
    );
    true
}

/// Our Delete of a CHILD_SA was answered.
pub(crate) fn child_deleted(sa: &mut IkeSa, inbound_spi: u32, out: &mut Output) {
    if let Some(i) = sa
        .children
        .iter()
        .position(|c| c.inbound_spi == inbound_spi)
    {
        let child = sa.children.remove(i);
        out.event(Event::ChildSaDeleted {
            peer: sa.peer.clone(),
            inbound_spi: child.inbound_spi,
            outbound_spi: child.outbound_spi,
        });
    }
}

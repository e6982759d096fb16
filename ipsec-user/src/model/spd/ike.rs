//! The SPD's IKE part: peers, SPs that name a peer (`sp add --ike-peer`), and the SAs IKE
//! installs for them.
//!
//! Contract:
//! - Peers are records like SAs and SPs: validated on add, unique by name and by (local,
//!   remote), persisted; a peer an SP names cannot be removed.
//! - An `ike` SA is an ordinary [`Sa`] in `sas` (the datapath, the engine and `sa list` treat it
//!   like any other) that is also listed in `ike_sas`. [`Spd::install_ike_child`] adds a
//!   CHILD_SA's two SAs; the peer's SPs are bound by one rule, applied after every change: an
//!   inbound SP to the inbound SA of the peer's newest CHILD_SA, an outbound SP to the outbound SA
//!   of its newest CHILD_SA whose [`OutboundSwitch`] has come (make before break, RFC 7296 §2.8:
//!   the responder of a rekey keeps sending on the old CHILD_SA until the initiator, which
//!   installed the new one before deleting the old, deletes it, or until
//!   [`Spd::promote_ike_outbound`] reports ESP arriving on the new one). An SA an inbound SP named
//!   before stays accepted through `former` until [`Spd::remove_ike_sas`] removes it. Removing
//!   the SA an SP is bound to moves the SP to what the rule says then, or unbinds it when the peer
//!   has no CHILD_SA left: its flow fails closed until the next one.
//! - The serialised SPD (state.json) never holds an `ike` SA, a binding to one, or a former
//!   record of one: negotiated keys and their state stay in memory.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::{Index, Spd};
use crate::model::args::{PeerAddArgs, PeerRemoveArgs, opt};
use crate::model::error::{ModelError, shown};
use crate::model::parse::{self, allowed};
use crate::model::peer::Peer;
use crate::model::sa::Sa;
use crate::model::sp::Sp;
use crate::model::types::{Direction, Mode};

/// An SP as persisted: an IKE SP without its binding.
struct PersistedSp<'a>(&'a Sp);

impl Serialize for PersistedSp<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.ike_peer.is_some() && self.0.sa_name.is_some() {
            let mut unbound = self.0.clone();
            unbound.sa_name = None;
            unbound.serialize(serializer)
        } else {
            self.0.serialize(serializer)
        }
    }
}

struct Seq<I>(std::cell::RefCell<Option<I>>);

impl<I: Iterator<Item = T>, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.borrow_mut().take() {
            Some(items) => serializer.collect_seq(items),
            None => serializer.collect_seq(std::iter::empty::<T>()),
        }
    }
}

fn seq<I: Iterator>(items: I) -> Seq<I> {
    Seq(std::cell::RefCell::new(Some(items)))
}

impl Serialize for Spd {
    /// The records without anything IKE negotiated (see the module contract); an SPD without
    /// peers serialises exactly as before they existed.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut former = self.former.clone();
        for name in self.ike_sas.keys() {
            former.sa_removed(name);
        }
        let fields = 3 + usize::from(!former.is_empty()) + usize::from(!self.peers.is_empty());
        let mut state = serializer.serialize_struct("Spd", fields)?;
        state.serialize_field(
            "sas",
            &seq(self
                .sas
                .iter()
                .filter(|sa| !self.ike_sas.contains_key(&sa.name))),
        )?;
        state.serialize_field("sps", &seq(self.sps.iter().map(PersistedSp)))?;
        state.serialize_field("next_seq", &self.next_seq)?;
        if !former.is_empty() {
            state.serialize_field("former", &former)?;
        }
        if !self.peers.is_empty() {
            state.serialize_field("peers", &self.peers)?;
        }
        state.end()
    }
}

/// When a new CHILD_SA's outbound SA starts carrying its peer's outbound flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundSwitch {
    /// At once: the peer already receives on it (we started the exchange, or it is the first).
    Now,
    /// When the CHILD_SA whose inbound SA is named `replaces` is removed (the peer rekeyed it
    /// and deletes it once it has installed this one, RFC 7296 §2.8), or when
    /// [`Spd::promote_ike_outbound`] names this one's inbound SA (ESP arrived on it).
    AfterReplaced { replaces: String },
    /// Never: a redundant CHILD_SA of a simultaneous rekey (§2.8.1), about to be deleted.
    Never,
}

/// One CHILD_SA IKE installed: its SA names and when its outbound SA may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
struct IkeChild {
    inbound: String,
    outbound: String,
    switch: OutboundSwitch,
}

/// Per peer, its CHILD_SAs in the order they were installed (see the module contract).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct IkeChildren(BTreeMap<String, Vec<IkeChild>>);

impl IkeChildren {
    /// The SA the peer's SPs of `direction` are bound to by the rule of the module contract.
    fn binding(&self, peer: &str, direction: Direction) -> Option<&str> {
        let children = self.0.get(peer)?;
        match direction {
            Direction::In => children.last().map(|c| c.inbound.as_str()),
            Direction::Out => children
                .iter()
                .rev()
                .find(|c| c.switch == OutboundSwitch::Now)
                .map(|c| c.outbound.as_str()),
        }
    }

    /// The SAs named `names` were removed: their CHILD_SAs go, and a CHILD_SA waiting for the
    /// one it replaces to go may send. The peers whose CHILD_SAs changed.
    fn removed(&mut self, names: &[String]) -> Vec<String> {
        let mut changed = Vec::new();
        for (peer, children) in &mut self.0 {
            let before = children.len();
            children.retain(|c| !names.contains(&c.inbound) && !names.contains(&c.outbound));
            if children.len() != before {
                changed.push(peer.clone());
            }
            let inbound: Vec<String> = children.iter().map(|c| c.inbound.clone()).collect();
            for child in children.iter_mut() {
                if let OutboundSwitch::AfterReplaced { replaces } = &child.switch
                    && !inbound.contains(replaces)
                {
                    child.switch = OutboundSwitch::Now;
                }
            }
        }
        self.0.retain(|_, children| !children.is_empty());
        changed
    }

    /// The CHILD_SAs whose inbound SA is in `inbound` and that wait for the one they replace:
    /// they may send now. The peers whose CHILD_SAs changed.
    fn promote(&mut self, inbound: &[String]) -> Vec<String> {
        let mut changed = Vec::new();
        for (peer, children) in &mut self.0 {
            for child in children.iter_mut() {
                if matches!(child.switch, OutboundSwitch::AfterReplaced { .. })
                    && inbound.contains(&child.inbound)
                {
                    child.switch = OutboundSwitch::Now;
                    if !changed.contains(peer) {
                        changed.push(peer.clone());
                    }
                }
            }
        }
        changed
    }
}

impl Spd {
    /// `ike peer add`: see the module contract. `check` is the IKE core's part (proposals, the
    /// PSK's length; see `peer`), run after the model's own checks and before the uniqueness
    /// ones.
    pub fn add_peer(
        &mut self,
        args: &PeerAddArgs,
        check: impl Fn(&Peer) -> Result<(), ModelError>,
    ) -> Result<&Peer, ModelError> {
        let peer = Peer::parse(args)?;
        check(&peer)?;
        if self.peer(&peer.name).is_some() {
            return Err(ModelError::NameInUse {
                option: opt::PEER_NAME,
                kind: "peer",
                name: peer.name,
            });
        }
        if let Some(other) = self
            .peers
            .iter()
            .find(|p| p.local == peer.local && p.remote == peer.remote)
        {
            return Err(ModelError::Peer {
                option: opt::REMOTE,
                reason: format!(
                    "peer '{}' already runs ike between {} and {}; one peer per address pair",
                    other.name, peer.local, peer.remote
                ),
            });
        }
        self.peers.push(peer);
        Ok(self.peers.last().expect("just pushed"))
    }

    /// `ike peer remove`: refused while an SP names the peer; its `ike` SAs go with it.
    pub fn remove_peer(&mut self, args: &PeerRemoveArgs) -> Result<Peer, ModelError> {
        let name = parse::required(args.peer_name.as_ref(), opt::PEER_NAME, allowed::NAME)?;
        let index = self
            .peers
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| ModelError::NotFound {
                option: opt::PEER_NAME,
                kind: "peer",
                name: shown(name),
            })?;
        let users: Vec<String> = self
            .sps
            .iter()
            .filter(|sp| sp.ike_peer.as_deref() == Some(name))
            .map(|sp| sp.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(ModelError::PeerInUse {
                peer: name.to_owned(),
                sps: users,
            });
        }
        let owned: Vec<String> = self
            .ike_sas
            .iter()
            .filter(|(_, peer)| peer.as_str() == name)
            .map(|(sa, _)| sa.clone())
            .collect();
        self.drop_ike_sas(&owned);
        Ok(self.peers.remove(index))
    }

    /// Every peer, in creation order.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The peer named `name`.
    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// The peer whose CHILD_SA the SA named `sa` belongs to, if IKE installed it.
    pub fn ike_owner(&self, sa: &str) -> Option<&str> {
        self.ike_sas.get(sa).map(String::as_str)
    }

    /// The SPs that name the peer `peer`, in creation order.
    pub fn ike_sps(&self, peer: &str) -> impl Iterator<Item = &Sp> + '_ {
        let peer = peer.to_owned();
        self.sps
            .iter()
            .filter(move |sp| sp.ike_peer.as_deref() == Some(peer.as_str()))
    }

    /// The `ike` SA a new SP of `peer` in `direction` is bound to: the current CHILD_SA's, if
    /// its mode is the SP's.
    pub(super) fn ike_binding(
        &self,
        peer: &str,
        direction: Direction,
        mode: Mode,
    ) -> Option<String> {
        let name = self.ike_current.binding(peer, direction)?;
        self.sa(name).filter(|sa| sa.mode == mode)?;
        Some(name.to_owned())
    }

    /// Binds every SP of `peer` as the module contract's rule says (an SP whose SA is not of
    /// its mode stays unbound); a rebinding is a replacement of the SP, so the SA it named
    /// stays accepted inbound through `former`.
    fn rebind_ike_sps(&mut self, peer: &str) {
        for i in 0..self.sps.len() {
            let sp = &self.sps[i];
            if sp.ike_peer.as_deref() != Some(peer) {
                continue;
            }
            let target = self.ike_binding(peer, sp.direction, sp.mode);
            if sp.sa_name == target {
                continue;
            }
            let old = sp.clone();
            let mut bound = old.clone();
            bound.sa_name = target;
            if old.sa_name.is_some() {
                self.former.sp_removed(&old);
            }
            self.former.sp_added(&bound);
            self.sps[i] = bound;
        }
    }

    /// Inbound SAs of CHILD_SAs whose outbound SA waits for the CHILD_SA they replace
    /// ([`OutboundSwitch::AfterReplaced`]): ESP arriving on one proves the peer installed it.
    pub fn ike_outbound_waiting(&self) -> Vec<&Sa> {
        self.ike_current
            .0
            .values()
            .flatten()
            .filter(|c| matches!(c.switch, OutboundSwitch::AfterReplaced { .. }))
            .filter_map(|c| self.sa(&c.inbound))
            .collect()
    }

    /// ESP arrived on these inbound `ike` SAs: the CHILD_SAs they belong to may send now (the
    /// peer installed them), and the peers' outbound SPs move to them if they are the newest.
    /// False when nothing changed.
    pub fn promote_ike_outbound(&mut self, inbound: &[String]) -> bool {
        let peers = self.ike_current.promote(inbound);
        if peers.is_empty() {
            return false;
        }
        for peer in &peers {
            self.rebind_ike_sps(peer);
        }
        self.index = Index::build(&self.sas, &self.sps);
        true
    }

    /// `sa remove --remove-all` while IKE holds SAs: every user SA, atomically (none if any is
    /// in use); the `ike` SAs stay.
    pub(super) fn remove_user_sas(&mut self) -> Result<Vec<Sa>, ModelError> {
        let users = |sa: &Sa| -> Vec<String> {
            self.sa_users(&sa.name)
                .into_iter()
                .map(|sp| sp.name.clone())
                .collect()
        };
        let held: Vec<(String, Vec<String>)> = self
            .sas
            .iter()
            .filter(|sa| !self.ike_sas.contains_key(&sa.name))
            .filter(|sa| self.index.has_users(&sa.name))
            .map(|sa| (sa.name.clone(), users(sa)))
            .collect();
        if !held.is_empty() {
            return Err(ModelError::SasInUse { held });
        }
        let (removed, kept): (Vec<Sa>, Vec<Sa>) = std::mem::take(&mut self.sas)
            .into_iter()
            .partition(|sa| !self.ike_sas.contains_key(&sa.name));
        self.sas = kept;
        for sa in &removed {
            self.former.sa_removed(&sa.name);
        }
        self.index = Index::build(&self.sas, &self.sps);
        Ok(removed)
    }

    /// A CHILD_SA negotiated with `peer`: adds its two SAs (every check of `sa add` but the
    /// name's syntax applies: unique name, SPI and GCM key, the limit) and binds the peer's SPs
    /// to them, the outbound ones when `switch` says; see the module contract. Nothing changes
    /// on error.
    pub fn install_ike_child(
        &mut self,
        peer: &str,
        inbound: Sa,
        outbound: Sa,
        switch: OutboundSwitch,
    ) -> Result<(), ModelError> {
        if self.peer(peer).is_none() {
            return Err(ModelError::UnknownPeer { name: shown(peer) });
        }
        let mut next = self.clone();
        inbound.check()?;
        outbound.check()?;
        let (in_name, out_name) = (inbound.name.clone(), outbound.name.clone());
        next.insert_sa(inbound)?;
        next.insert_sa(outbound)?;
        next.ike_sas.insert(in_name.clone(), peer.to_owned());
        next.ike_sas.insert(out_name.clone(), peer.to_owned());
        next.ike_current
            .0
            .entry(peer.to_owned())
            .or_default()
            .push(IkeChild {
                inbound: in_name,
                outbound: out_name,
                switch,
            });
        next.rebind_ike_sps(peer);
        next.index = Index::build(&next.sas, &next.sps);
        *self = next;
        Ok(())
    }

    /// A CHILD_SA was deleted: removes the `ike` SAs with these SPIs (inbound, outbound) and
    /// unbinds the SPs bound to them. Returns the removed SA names (none if they were gone).
    pub fn remove_ike_sas(&mut self, spis: &[u32]) -> Vec<String> {
        let names: Vec<String> = self
            .sas
            .iter()
            .filter(|sa| spis.contains(&sa.spi) && self.ike_sas.contains_key(&sa.name))
            .map(|sa| sa.name.clone())
            .collect();
        self.drop_ike_sas(&names);
        names
    }

    fn drop_ike_sas(&mut self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        self.sas.retain(|sa| !names.contains(&sa.name));
        for sp in &mut self.sps {
            if sp.sa_name.as_ref().is_some_and(|sa| names.contains(sa)) {
                sp.sa_name = None;
            }
        }
        for name in names {
            self.former.sa_removed(name);
            self.ike_sas.remove(name);
        }
        self.index = Index::build(&self.sas, &self.sps);
        // The SPs of the peers that lost a CHILD_SA move to what is left (or stay unbound).
        let peers = self.ike_current.removed(names);
        if peers.is_empty() {
            return;
        }
        for peer in peers {
            self.rebind_ike_sps(&peer);
        }
        self.index = Index::build(&self.sas, &self.sps);
    }

    /// The peers' part of `validate`: each peer on its own, unique names, every `--ike-peer`
    /// names a peer, an SP bound by IKE is bound to an `ike` SA of its peer.
    pub(super) fn validate_peers(&self) -> Result<(), ModelError> {
        let mut names = std::collections::HashSet::new();
        for peer in &self.peers {
            let what = || format!("peer '{}'", shown(&peer.name));
            peer.check().map_err(|e| ModelError::state(what(), e))?;
            if !names.insert(peer.name.as_str()) {
                return Err(ModelError::state(what(), "the name is used twice"));
            }
        }
        for sp in &self.sps {
            let Some(peer) = &sp.ike_peer else { continue };
            let what = || format!("sp '{}'", shown(&sp.name));
            if !names.contains(peer.as_str()) {
                return Err(ModelError::state(
                    what(),
                    ModelError::UnknownPeer { name: shown(peer) },
                ));
            }
            if let Some(sa) = &sp.sa_name
                && self.ike_sas.get(sa) != Some(peer)
            {
                return Err(ModelError::state(
                    what(),
                    format!("it names peer '{peer}' and sa '{sa}', which ike did not install"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::args::{IkeSpAddArgs, SaRemoveArgs, SpAddArgs};
    use crate::model::key::Key;
    use crate::model::types::{EncryptionAlgorithm, IntegrityAlgorithm};

    fn peer_args(name: &str) -> PeerAddArgs {
        PeerAddArgs {
            peer_name: Some(name.into()),
            local: Some("fd00::1".into()),
            remote: Some("fd00::2".into()),
            auth: Some("psk".into()),
            psk: Some("0x00112233445566778899aabbccddeeff".into()),
            ..PeerAddArgs::default()
        }
    }

    fn ike_sp(name: &str, direction: &str, peer: &str) -> IkeSpAddArgs {
        let (src, dst) = if direction == "out" {
            ("fd00::1/128", "fd00::2/128")
        } else {
            ("fd00::2/128", "fd00::1/128")
        };
        IkeSpAddArgs {
            sp: SpAddArgs {
                sp_source: Some(src.into()),
                sp_destination: Some(dst.into()),
                source_port: Some("any".into()),
                destination_port: Some("any".into()),
                upper_layer_protocol: Some("icmp6".into()),
                flow_direction: Some(direction.into()),
                sp_mode: Some("transport".into()),
                sp_name: Some(name.into()),
                ..SpAddArgs::default()
            },
            ike_peer: Some(peer.into()),
        }
    }

    fn child(name: &str, spi: u32, source: &str, destination: &str) -> Sa {
        let mut key = [0u8; 20];
        key[..4].copy_from_slice(&spi.to_be_bytes());
        Sa {
            id: 0,
            name: name.into(),
            source: Some(source.parse().expect("an address")),
            destination: Some(destination.parse().expect("an address")),
            mode: Mode::Transport,
            spi,
            encryption: EncryptionAlgorithm::Aes128Gcm,
            encryption_key: Key::new(key.to_vec()),
            integrity: IntegrityAlgorithm::None,
            integrity_key: Key::default(),
            udp_encap: None,
        }
    }

    fn install(spd: &mut Spd, inbound: u32, outbound: u32) {
        install_switch(spd, inbound, outbound, OutboundSwitch::Now);
    }

    fn install_switch(spd: &mut Spd, inbound: u32, outbound: u32, switch: OutboundSwitch) {
        spd.install_ike_child(
            "p",
            child(
                &format!("ike-p-{inbound:08x}"),
                inbound,
                "fd00::2",
                "fd00::1",
            ),
            child(
                &format!("ike-p-{outbound:08x}"),
                outbound,
                "fd00::1",
                "fd00::2",
            ),
            switch,
        )
        .expect("installing a child sa");
    }

    fn bound(spd: &Spd, sp: &str) -> Option<String> {
        spd.sp(sp).and_then(|sp| sp.sa_name.clone())
    }

    /// A peer with one inbound and one outbound SP over the CHILD_SA 0x1000/0x2000.
    fn established() -> Spd {
        let mut spd = Spd::new();
        spd.add_peer(&peer_args("p"), |_| Ok(()))
            .expect("adding a peer");
        spd.add_ike_sp(&ike_sp("out1", "out", "p")).expect("out sp");
        spd.add_ike_sp(&ike_sp("in1", "in", "p")).expect("in sp");
        install(&mut spd, 0x1000, 0x2000);
        spd
    }

    #[test]
    fn responder_of_a_rekey_sends_on_the_old_sa_until_it_is_deleted() {
        let mut spd = established();
        let replaces = OutboundSwitch::AfterReplaced {
            replaces: "ike-p-00001000".into(),
        };
        install_switch(&mut spd, 0x1001, 0x2001, replaces.clone());
        // Inbound moves at once (the old one still accepted); outbound waits.
        assert_eq!(bound(&spd, "in1").as_deref(), Some("ike-p-00001001"));
        let in1 = spd.sp("in1").expect("in1").clone();
        assert!(spd.accepts_sa(&in1, "ike-p-00001000"));
        assert_eq!(bound(&spd, "out1").as_deref(), Some("ike-p-00002000"));
        let waiting: Vec<String> = spd
            .ike_outbound_waiting()
            .iter()
            .map(|sa| sa.name.clone())
            .collect();
        assert_eq!(waiting, ["ike-p-00001001"]);
        spd.assert_index_agrees();
        // The initiator deletes the old CHILD_SA: outbound moves in the same change.
        assert_eq!(spd.remove_ike_sas(&[0x1000, 0x2000]).len(), 2);
        assert_eq!(bound(&spd, "out1").as_deref(), Some("ike-p-00002001"));
        assert_eq!(bound(&spd, "in1").as_deref(), Some("ike-p-00001001"));
        assert!(spd.ike_outbound_waiting().is_empty());
        spd.assert_index_agrees();

        // Or ESP arrives on the new inbound SA first.
        let mut spd = established();
        install_switch(&mut spd, 0x1001, 0x2001, replaces);
        assert!(!spd.promote_ike_outbound(&["ike-p-00001000".into()]));
        assert!(spd.promote_ike_outbound(&["ike-p-00001001".into()]));
        assert_eq!(bound(&spd, "out1").as_deref(), Some("ike-p-00002001"));
        assert!(!spd.promote_ike_outbound(&["ike-p-00001001".into()]));
    }

    #[test]
    fn a_collision_never_sends_on_the_redundant_sa_nor_unbinds() {
        // We answered the peer's rekey (0x1001) and then our own, redundant one (0x1002) was
        // answered (RFC 7296 §2.8.1).
        let mut spd = established();
        let replaces = OutboundSwitch::AfterReplaced {
            replaces: "ike-p-00001000".into(),
        };
        install_switch(&mut spd, 0x1001, 0x2001, replaces);
        install_switch(&mut spd, 0x1002, 0x2002, OutboundSwitch::Never);
        assert_eq!(bound(&spd, "out1").as_deref(), Some("ike-p-00002000"));
        assert_eq!(bound(&spd, "in1").as_deref(), Some("ike-p-00001002"));
        let in1 = spd.sp("in1").expect("in1").clone();
        assert!(spd.accepts_sa(&in1, "ike-p-00001000"));
        assert!(spd.accepts_sa(&in1, "ike-p-00001001"));
        // We delete the redundant one: the SPs fall back, nothing unbound.
        spd.remove_ike_sas(&[0x1002, 0x2002]);
        assert_eq!(bound(&spd, "in1").as_deref(), Some("ike-p-00001001"));
        assert_eq!(bound(&spd, "out1").as_deref(), Some("ike-p-00002000"));
        let in1 = spd.sp("in1").expect("in1").clone();
        assert!(spd.accepts_sa(&in1, "ike-p-00001000"));
        // The peer deletes the old one: the survivor carries both directions.
        spd.remove_ike_sas(&[0x1000, 0x2000]);
        assert_eq!(bound(&spd, "out1").as_deref(), Some("ike-p-00002001"));
        assert_eq!(bound(&spd, "in1").as_deref(), Some("ike-p-00001001"));
        spd.assert_index_agrees();

        // The other side of the same collision: its own exchange survives (sends at once), the
        // peer's redundant one waits for the old one and is then deleted by the peer.
        let mut spd = established();
        let replaces = OutboundSwitch::AfterReplaced {
            replaces: "ike-p-00001000".into(),
        };
        install_switch(&mut spd, 0x1002, 0x2002, replaces);
        install_switch(&mut spd, 0x1001, 0x2001, OutboundSwitch::Now);
        assert_eq!(bound(&spd, "out1").as_deref(), Some("ike-p-00002001"));
        spd.remove_ike_sas(&[0x1000, 0x2000]);
        assert_eq!(bound(&spd, "out1").as_deref(), Some("ike-p-00002001"));
        spd.remove_ike_sas(&[0x1002, 0x2002]);
        assert_eq!(bound(&spd, "out1").as_deref(), Some("ike-p-00002001"));
        assert_eq!(bound(&spd, "in1").as_deref(), Some("ike-p-00001001"));
        spd.assert_index_agrees();
    }

    #[test]
    fn ike_sps_bind_rekey_and_fail_closed() {
        let mut spd = Spd::new();
        spd.add_peer(&peer_args("p"), |_| Ok(()))
            .expect("adding a peer");
        spd.add_ike_sp(&ike_sp("out1", "out", "p")).expect("out sp");
        spd.add_ike_sp(&ike_sp("in1", "in", "p")).expect("in sp");
        assert_eq!(spd.sp("out1").and_then(|sp| sp.sa_name.clone()), None);
        spd.validate().expect("a valid spd");

        install(&mut spd, 0x1000, 0x2000);
        assert_eq!(
            spd.sp("out1").and_then(|sp| sp.sa_name.as_deref()),
            Some("ike-p-00002000")
        );
        assert_eq!(
            spd.sp("in1").and_then(|sp| sp.sa_name.as_deref()),
            Some("ike-p-00001000")
        );
        spd.validate().expect("a valid spd with ike sas");
        spd.assert_index_agrees();

        // Rekey: the new pair is bound, the old inbound SA still accepted until deleted.
        install(&mut spd, 0x1001, 0x2001);
        let in1 = spd.sp("in1").expect("in1").clone();
        assert_eq!(in1.sa_name.as_deref(), Some("ike-p-00001001"));
        assert!(spd.accepts_sa(&in1, "ike-p-00001000"));
        assert_eq!(spd.remove_ike_sas(&[0x1000, 0x2000]).len(), 2);
        assert!(!spd.accepts_sa(&in1, "ike-p-00001000"));
        assert_eq!(
            spd.sp("in1").and_then(|sp| sp.sa_name.as_deref()),
            Some("ike-p-00001001")
        );

        // An SA IKE installed is not the user's to remove.
        let error = spd
            .remove_sa(&SaRemoveArgs {
                sa_name: Some("ike-p-00001001".into()),
                ..SaRemoveArgs::default()
            })
            .expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("negotiated by ike with peer 'p'"),
            "{error}"
        );

        // Nothing negotiated reaches the serialised form.
        let json = serde_json::to_string(&spd).expect("serialising");
        assert!(!json.contains("ike-p-"), "{json}");
        let back: Spd = serde_json::from_str(&json).expect("deserialising");
        back.validate().expect("the persisted state is valid");
        assert_eq!(back.sp("in1").and_then(|sp| sp.sa_name.clone()), None);
        assert_eq!(back.peers().len(), 1);

        // Deleting the current child unbinds: the flow fails closed.
        spd.remove_ike_sas(&[0x1001, 0x2001]);
        assert_eq!(spd.sp("out1").and_then(|sp| sp.sa_name.clone()), None);
        assert!(spd.sas().is_empty());
        spd.assert_index_agrees();
    }

    #[test]
    fn peer_rules() {
        let mut spd = Spd::new();
        spd.add_peer(&peer_args("p"), |_| Ok(()))
            .expect("adding a peer");
        assert_eq!(
            spd.add_peer(&peer_args("p"), |_| Ok(()))
                .expect_err("dup")
                .to_string(),
            "--peer-name: peer 'p' already exists; names are unique"
        );
        assert!(
            spd.add_peer(&peer_args("q"), |_| Ok(()))
                .expect_err("same pair")
                .to_string()
                .starts_with("--remote: peer 'p' already runs ike")
        );
        let mut both = ike_sp("x", "out", "p");
        both.sp.sa_name = Some("sa1".into());
        assert_eq!(
            spd.add_ike_sp(&both).expect_err("both").to_string(),
            "--ike-peer: cannot be combined with --sa-name; use one of them"
        );
        assert_eq!(
            spd.add_ike_sp(&ike_sp("x", "out", "nope"))
                .expect_err("unknown")
                .to_string(),
            "--ike-peer: no peer named 'nope'; add it first with ike peer add"
        );
        let mut discard = ike_sp("x", "out", "p");
        discard.sp.action = Some("discard".into());
        assert!(spd.add_ike_sp(&discard).is_err());
        spd.add_ike_sp(&ike_sp("x", "out", "p")).expect("an ike sp");
        let remove = PeerRemoveArgs {
            peer_name: Some("p".into()),
        };
        assert_eq!(
            spd.remove_peer(&remove).expect_err("in use").to_string(),
            "--peer-name: peer 'p' is used by sp 'x'; remove those policies first"
        );
    }
}

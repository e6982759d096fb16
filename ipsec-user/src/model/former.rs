//! `Former`: the SAs an `ipsec` SP named before, which its traffic may still arrive on.
//!
//! Rotating manual keys takes phases (see the README): every host first adds its new SAs and
//! points its inbound SPs at the new inbound SA, then points its outbound SPs at the new outbound
//! SA, and only then removes the old SAs. Between the first two phases the peer still sends under
//! the old SPI, so an SP that is replaced (removed and added again under the same name, in one
//! batch) keeps accepting ESP under the SAs it named before, until those SAs are removed.
//!
//! Contract:
//! - Bindings are kept by SP name. Removing an `ipsec` SP by name records the SA it named (with
//!   its direction); adding an SP of that name again inherits the record if it is an `ipsec` SP
//!   of the same direction (minus the SA it now names), and drops it otherwise.
//! - Removing an SA removes it from every record, so `sa remove` ends the acceptance; an SA that
//!   only records name is not in use and can be removed. `sp remove --remove-all` drops them all.
//! - Only a live SP's record counts: the datapath accepts ESP under a former SA for exactly the
//!   live SP that named it (XDP steers its SPI to the engine; the engine lets a decrypted packet
//!   in if the SP it matches names, or named, that SA).
//! - Persisted with the SPD (absent = none, so older state files load unchanged).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sp::Sp;
use super::types::{Action, Direction};

/// What one SP name named before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormerSas {
    /// The direction of the SP that named them: only an SP of this direction inherits them.
    pub direction: Direction,
    /// SA names, oldest first, none twice.
    pub sa_names: Vec<String>,
}

/// Former bindings by SP name; see the module contract.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Former(BTreeMap<String, FormerSas>);

impl Former {
    /// No binding at all (the serialised state omits the field then).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every record: SP name -> what it named before.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &FormerSas)> {
        self.0.iter()
    }

    /// The SAs the SP named `sp` named before, still accepted for it (empty when none).
    pub fn of(&self, sp: &str) -> &[String] {
        self.0.get(sp).map_or(&[], |f| f.sa_names.as_slice())
    }

    /// `sp` was removed: remember the SA it named, if it is an `ipsec` SP.
    pub(super) fn sp_removed(&mut self, sp: &Sp) {
        let Some(sa) = sp.sa_name.as_ref().filter(|_| sp.action == Action::Ipsec) else {
            self.0.remove(&sp.name);
            return;
        };
        let entry = self.0.entry(sp.name.clone()).or_insert_with(|| FormerSas {
            direction: sp.direction,
            sa_names: Vec::new(),
        });
        if entry.direction != sp.direction {
            entry.direction = sp.direction;
            entry.sa_names.clear();
        }
        if !entry.sa_names.contains(sa) {
            entry.sa_names.push(sa.clone());
        }
    }

    /// `sp` was added: it inherits its name's record if it is an `ipsec` SP of that direction.
    /// An SA it names in a direction other than a record's leaves that record: an SA protects
    /// one direction only.
    pub(super) fn sp_added(&mut self, sp: &Sp) {
        let inherits = sp.action == Action::Ipsec
            && self
                .0
                .get(&sp.name)
                .is_some_and(|f| f.direction == sp.direction);
        if !inherits {
            self.0.remove(&sp.name);
        }
        if let Some(sa) = &sp.sa_name {
            for (name, former) in &mut self.0 {
                if former.direction != sp.direction || *name == sp.name {
                    former.sa_names.retain(|former_sa| former_sa != sa);
                }
            }
        }
        self.0.retain(|_, f| !f.sa_names.is_empty());
    }

    /// The SA named `sa` was removed: nothing accepts it any more.
    pub(super) fn sa_removed(&mut self, sa: &str) {
        for former in self.0.values_mut() {
            former.sa_names.retain(|name| name != sa);
        }
        self.0.retain(|_, f| !f.sa_names.is_empty());
    }

    /// Every SA was removed, or every SP.
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use crate::model::fixtures::{example_sp_args, named_sa_args};
    use crate::model::{SaRemoveArgs, SpAddArgs, SpRemoveArgs, Spd};

    /// An inbound `ipsec` SP `name` over SA `sa`.
    fn inbound(name: &str, sa: &str) -> SpAddArgs {
        SpAddArgs {
            flow_direction: Some("in".into()),
            sa_name: Some(sa.into()),
            sp_name: Some(name.into()),
            ..example_sp_args()
        }
    }

    fn remove_sp(spd: &mut Spd, name: &str) {
        spd.remove_sp(&SpRemoveArgs {
            sp_name: Some(name.into()),
            remove_all: false,
        })
        .expect("removing an sp");
    }

    fn remove_sa(spd: &mut Spd, name: &str) {
        spd.remove_sa(&SaRemoveArgs {
            sa_name: Some(name.into()),
            ..SaRemoveArgs::default()
        })
        .expect("removing an sa");
    }

    /// Phase 1 of a rotation: `in1` moves from `old` to `new`.
    fn rotated() -> Spd {
        let mut spd = Spd::new();
        for (name, spi) in [("old", 0x1000), ("new", 0x2000)] {
            spd.add_sa(&named_sa_args(name, spi, "transport"))
                .expect("adding an sa");
        }
        spd.add_sp(&inbound("in1", "old")).expect("adding in1");
        remove_sp(&mut spd, "in1");
        spd.add_sp(&inbound("in1", "new")).expect("re-adding in1");
        spd
    }

    #[test]
    fn a_replaced_sp_keeps_its_former_sa_until_it_is_removed() {
        let mut spd = rotated();
        assert_eq!(spd.former_sas("in1"), ["old"]);
        assert!(spd.is_inbound_sa("old") && spd.is_inbound_sa("new"));
        let sp = spd.sp("in1").expect("in1").clone();
        assert_eq!(spd.sa_names_of(&sp).collect::<Vec<_>>(), ["new", "old"]);
        assert!(spd.accepts_sa(&sp, "old"));
        spd.validate().expect("a rotated state is valid");

        // Persisted, and read back; a state without the field loads as before.
        let json = serde_json::to_value(&spd).expect("serialising");
        assert_eq!(
            json["former"],
            serde_json::json!({"in1": {"direction": "in", "sa_names": ["old"]}})
        );
        let back: Spd = serde_json::from_value(json.clone()).expect("deserialising");
        assert_eq!(back, spd);
        let mut older = json;
        older.as_object_mut().expect("an object").remove("former");
        let older: Spd = serde_json::from_value(older).expect("a state without former");
        assert!(older.former_sas("in1").is_empty());

        // The old SA is not in use: removing it ends the acceptance.
        remove_sa(&mut spd, "old");
        assert!(spd.former_sas("in1").is_empty());
        assert!(!spd.is_inbound_sa("old"));
        assert!(
            !serde_json::to_string(&spd)
                .expect("serialising")
                .contains("former"),
            "no empty field"
        );
    }

    #[test]
    fn the_next_outbound_sa_may_carry_esp_before_an_sp_names_it() {
        use crate::model::Direction::{In, Out};
        let mut spd = rotated();
        spd.add_sa(&named_sa_args("next-out", 0x3000, "transport"))
            .expect("adding the next outbound sa");
        let carries = |spd: &Spd, name| (spd.carries_esp(In, name), spd.carries_esp(Out, name));
        assert_eq!(
            carries(&spd, "next-out"),
            (false, true),
            "unnamed: out only"
        );
        assert_eq!(carries(&spd, "new"), (true, false), "named inbound");
        assert_eq!(
            carries(&spd, "old"),
            (true, false),
            "formerly named inbound"
        );
        let mut out = inbound("out1", "next-out");
        out.flow_direction = Some("out".into());
        spd.add_sp(&out).expect("pointing an outbound sp at it");
        assert_eq!(carries(&spd, "next-out"), (false, true));
        remove_sa(&mut spd, "old");
        assert_eq!(carries(&spd, "new"), (true, false));
    }

    #[test]
    fn only_a_live_sp_of_the_same_direction_and_action_inherits() {
        let mut spd = rotated();
        remove_sp(&mut spd, "in1");
        assert!(
            !spd.is_inbound_sa("old") && !spd.is_inbound_sa("new"),
            "a removed sp accepts nothing"
        );
        let mut discard = inbound("in1", "new");
        discard.action = Some("discard".into());
        discard.sa_name = None;
        spd.add_sp(&discard)
            .expect("adding a discard sp of that name");
        assert!(
            spd.former_sas("in1").is_empty(),
            "a discard sp inherits nothing"
        );
        remove_sp(&mut spd, "in1");
        spd.add_sp(&inbound("in1", "old")).expect("back to old");
        assert!(spd.former_sas("in1").is_empty(), "the record was dropped");

        // Going back to the SA it names now leaves nothing former.
        remove_sp(&mut spd, "in1");
        spd.add_sp(&inbound("in1", "new")).expect("to new");
        remove_sp(&mut spd, "in1");
        spd.add_sp(&inbound("in1", "old"))
            .expect("back to old again");
        assert_eq!(spd.former_sas("in1"), ["new"]);

        // An SA that an sp of the other direction now names leaves the record.
        let mut out = inbound("out1", "new");
        out.flow_direction = Some("out".into());
        out.sp_source = Some("2001:db8:9::/64".into());
        spd.add_sp(&out)
            .expect("an outbound sp over the former inbound sa");
        assert!(spd.former_sas("in1").is_empty());
        spd.validate().expect("still valid");

        spd.remove_sp(&SpRemoveArgs {
            sp_name: None,
            remove_all: true,
        })
        .expect("removing every sp");
        spd.add_sp(&inbound("in1", "new")).expect("a fresh in1");
        assert!(spd.former_sas("in1").is_empty(), "remove-all forgets");
    }

    #[test]
    fn validate_catches_a_former_sa_that_does_not_exist() {
        let spd = rotated();
        let mut json = serde_json::to_value(&spd).expect("serialising");
        json["former"]["in1"]["sa_names"][0] = serde_json::json!("gone");
        let loaded: Spd = serde_json::from_value(json).expect("right shape");
        assert_eq!(
            loaded
                .validate()
                .expect_err("a dangling former sa")
                .to_string(),
            "state: former sas of sp 'in1': --sa-name: no sa named 'gone'; add it first with sa add"
        );
    }
}

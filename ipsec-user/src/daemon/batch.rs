//! A batch of changes checked as a whole: every item applied in order to a copy of the policy
//! database, each against the ones before it exactly as if typed one at a time.
//!
//! Contract of [`apply`]: the committed SPD is never touched; either every item is accepted and
//! the copy holding all of them comes back, or the first refused item is named (its 1-based
//! position, the batch file line it came from, and the model's one-line message, which starts
//! with the option at fault) and nothing comes back. Committing the copy (one datapath sync, one
//! state write) is the control worker's job. `apply` (the whole-configuration command) builds
//! its difference as a list of [`Change`]s and goes through here too.

use super::protocol::{BatchItem, Change};
use crate::model::{ModelError, Spd};

/// The item of a batch that was refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{source}", where_(*.index, *.line))]
pub struct ItemError {
    /// Position in the batch, 1-based.
    pub index: usize,
    /// Line of the batch file, when the item came from one.
    pub line: Option<u64>,
    #[source]
    pub source: ModelError,
}

/// `line 7 (item 3): ` or `item 3: `: how a message names an item.
pub fn where_(index: usize, line: Option<u64>) -> String {
    match line {
        Some(line) => format!("line {line} (item {index}): "),
        None => format!("item {index}: "),
    }
}

/// What a change did, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Added(String),
    Removed(Vec<String>),
}

/// How many SAs and SPs an accepted batch adds and removes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub added: u64,
    pub removed: u64,
}

/// Apply one change to `spd` (unchanged on error).
pub fn change(spd: &mut Spd, change: &Change) -> Result<Outcome, ModelError> {
    Ok(match change {
        Change::SaAdd(args) => Outcome::Added(spd.add_sa(args)?.name.clone()),
        Change::SaRemove(args) => {
            Outcome::Removed(spd.remove_sa(args)?.into_iter().map(|sa| sa.name).collect())
        }
        Change::SpAdd(args) => Outcome::Added(spd.add_sp(args)?.name.clone()),
        Change::SpRemove(args) => {
            Outcome::Removed(spd.remove_sp(args)?.into_iter().map(|sp| sp.name).collect())
        }
        Change::PeerAdd(args) => {
            Outcome::Added(spd.add_peer(args, super::ike::check_peer)?.name.clone())
        }
        Change::PeerRemove(args) => Outcome::Removed(vec![spd.remove_peer(args)?.name]),
        Change::SpAddIke(args) => Outcome::Added(spd.add_ike_sp(args)?.name.clone()),
    })
}

/// Apply `items` to a copy of `spd`; see the module docs.
pub fn apply(spd: &Spd, items: &[BatchItem]) -> Result<(Spd, Summary), ItemError> {
    let mut next = spd.clone();
    let mut summary = Summary::default();
    for (i, item) in items.iter().enumerate() {
        match change(&mut next, &item.change) {
            Ok(Outcome::Added(_)) => summary.added += 1,
            Ok(Outcome::Removed(names)) => summary.removed += names.len() as u64,
            Err(source) => {
                return Err(ItemError {
                    index: i + 1,
                    line: item.line,
                    source,
                });
            }
        }
    }
    Ok((next, summary))
}

/// `sp add` of an inbound discard policy `name` from `source` (a prefix) to anywhere: the
/// daemon's unit tests' filler policy.
#[cfg(test)]
pub(crate) fn inbound_discard(name: &str, source: &str) -> crate::model::SpAddArgs {
    crate::model::SpAddArgs {
        sp_source: Some(source.to_owned()),
        sp_destination: Some("any".to_owned()),
        source_port: Some("any".to_owned()),
        destination_port: Some("any".to_owned()),
        flow_direction: Some("in".to_owned()),
        action: Some("discard".to_owned()),
        sp_name: Some(name.to_owned()),
        ..crate::model::SpAddArgs::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SaAddArgs, SpAddArgs, SpRemoveArgs};

    fn sa(name: &str, spi: &str) -> Change {
        Change::SaAdd(SaAddArgs {
            sa_source: Some("2001:db8::1".into()),
            sa_destination: Some("2001:db8::2".into()),
            sa_mode: Some("transport".into()),
            sa_spi: Some(spi.into()),
            encryption_algorithm: Some("null".into()),
            integrity_algorithm: Some("hmac-sha1".into()),
            integrity_key: Some("0x".to_owned() + &"ab".repeat(20)),
            sa_name: Some(name.into()),
            ..SaAddArgs::default()
        })
    }

    fn sp(name: &str, sa: &str) -> Change {
        Change::SpAdd(SpAddArgs {
            sp_source: Some("2001:db8::1/128".into()),
            sp_destination: Some(format!("2001:db8:{:x}::/48", name.len())),
            source_port: Some("any".into()),
            destination_port: Some("any".into()),
            flow_direction: Some("out".into()),
            sa_name: Some(sa.into()),
            sp_name: Some(name.into()),
            ..SpAddArgs::default()
        })
    }

    fn items(changes: Vec<Change>) -> Vec<BatchItem> {
        changes
            .into_iter()
            .zip(10..)
            .map(|(change, line)| BatchItem {
                line: Some(line),
                change,
            })
            .collect()
    }

    #[test]
    fn items_see_the_ones_before_them_and_the_base_is_untouched() {
        let base = Spd::new();
        let batch = items(vec![
            sa("sa1", "0x100"),
            sp("sp1", "sa1"),
            Change::SpRemove(SpRemoveArgs {
                sp_name: Some("sp1".into()),
                remove_all: false,
            }),
            sp("sp22", "sa1"),
        ]);
        let (next, summary) = apply(&base, &batch).expect("a valid batch");
        assert_eq!(
            summary,
            Summary {
                added: 3,
                removed: 1
            }
        );
        assert_eq!(next.sas().len(), 1);
        assert_eq!(next.sps().len(), 1);
        assert!(next.sp("sp22").is_some());
        assert_eq!(base, Spd::new(), "the committed spd was changed");
    }

    #[test]
    fn the_first_refused_item_is_named_with_its_line_and_option() {
        let base = Spd::new();
        // A reserved SPI at the start, in the middle and at the end.
        for bad in [0, 1, 2] {
            let mut changes = vec![sa("sa1", "0x100"), sp("sp1", "sa1"), sp("sp22", "sa1")];
            changes[bad] = sa("sa9", "0x10");
            let err = apply(&base, &items(changes)).expect_err("a bad item");
            assert_eq!(err.index, bad + 1);
            assert_eq!(err.line, Some(10 + bad as u64));
            let message = err.to_string();
            let expected = format!(
                "line {} (item {}): --sa-spi: 0x10 is reserved",
                10 + bad,
                bad + 1
            );
            assert!(message.starts_with(&expected), "{message}");
        }
        let unnamed = apply(
            &base,
            &[BatchItem {
                line: None,
                change: sp("sp1", "nope"),
            }],
        )
        .expect_err("an unknown sa");
        assert_eq!(
            unnamed.to_string(),
            "item 1: --sa-name: no sa named 'nope'; add it first with sa add"
        );
    }
}

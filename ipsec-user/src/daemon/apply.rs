//! `xipsec apply`: the difference between a whole desired configuration and the running one,
//! as the batch that turns one into the other; and `xipsec export`, the running configuration in
//! the form `apply` reads.
//!
//! Contract of [`plan`]:
//! - The desired configuration is a list of `sa add` and `sp add` items (a remove item is an
//!   error naming its line: what a file leaves out is removed). It is checked on its own, in
//!   order, on an empty SPD, exactly as a batch on an empty daemon would be: every error names
//!   the line, the item and the option, and nothing changes.
//! - Objects are matched by name. An SA differs when any `sa add` option differs, keys
//!   included (compared as bytes, never shown: a difference names the option only); an SP
//!   when any `sp add` option differs. An SP the file leaves as it is but whose SA changes is
//!   removed and added again with it (the model never replaces an SA under its policies).
//! - The batch removes first (changed and removed SPs, then SAs) and then adds what is new or
//!   changed in file order. Inside one batch the order cannot open a gap: the batch is checked
//!   on a copy and reaches the datapath as one epoch flip. Removing first means the batch never
//!   holds more than the file does (no limit is crossed half-way) and a renamed SA may keep its
//!   SPI.
//! - [`KEY_PLACEHOLDER`] (what `export` prints instead of a key) stands for the running key of
//!   the SA of the same name, and only while that SA is otherwise unchanged; anywhere else it
//!   is refused, naming the line and the key option. So `export | apply` finds no difference,
//!   and a redacted export never installs a key it does not hold.
//! - Policies are aged in the order they were added: an added, changed or re-added SP ranks
//!   after every SP left in place where only age decides (as `sp remove` + `sp add` would).

use std::collections::{BTreeMap, HashMap};

use super::batch::{ItemError, change, where_};
use super::protocol::{BatchItem, Change, Configuration, Difference, DifferenceKind, ExportedSa};
use crate::model::{Sa, SaAddArgs, SaRemoveArgs, Sp, SpRemoveArgs, Spd, opt};

/// What `xipsec export` prints in place of a key, and `apply` reads as "the running key".
pub const KEY_PLACEHOLDER: &str = "REDACTED";

/// Why an apply file was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The model refused an item of the file (checked on its own, on an empty SPD).
    #[error(transparent)]
    Item(#[from] ItemError),
    /// Only adds describe a configuration.
    #[error(
        "{}{what} cannot be in an apply file: it lists the whole configuration, so leave the \
         {kind} out to remove it (or use xipsec batch)",
        where_(*.index, *.line)
    )]
    NotAnAdd {
        index: usize,
        line: Option<u64>,
        what: &'static str,
        kind: &'static str,
    },
    /// A key placeholder where no running key may stand in.
    #[error(
        "{}{option}: {KEY_PLACEHOLDER} is the placeholder xipsec export prints instead of a \
         key; it keeps the running key of sa '{name}' only while that sa is otherwise \
         unchanged, {reason}: write the key (xipsec export --with-keys FILE writes them)",
        where_(*.index, *.line)
    )]
    Placeholder {
        index: usize,
        line: Option<u64>,
        option: &'static str,
        name: String,
        reason: String,
    },
}

/// The batch that turns the running configuration into the file's, and what it changes.
#[derive(Debug, Default)]
pub struct Plan {
    pub items: Vec<BatchItem>,
    pub differences: Vec<Difference>,
}

/// Compute the difference from `running` to the configuration `file` describes; see the
/// module docs.
pub fn plan(running: &Spd, file: &[BatchItem]) -> Result<Plan, ApplyError> {
    let (desired, kept) = desired(running, file)?;
    let sa_changes = sa_differences(running, &desired);
    for (name, (index, line, option)) in &kept {
        let reason = match sa_changes.get(name.as_str()) {
            None => continue,
            Some(None) => "and no sa of that name is running".to_owned(),
            Some(Some(fields)) => format!("but it differs in {}", fields.join(", ")),
        };
        return Err(ApplyError::Placeholder {
            index: *index,
            line: *line,
            option,
            name: name.clone(),
            reason,
        });
    }
    let mut sp_changes = sp_differences(running, &desired);
    for sp in running.sps() {
        if let Some(sa) = sp.sa_name.as_deref().filter(|sa| {
            matches!(sa_changes.get(sa), Some(Some(_))) && !sp_changes.contains_key(&sp.name)
        }) && desired.sp(&sp.name).is_some()
        {
            sp_changes.insert(
                sp.name.clone(),
                DifferenceKind::Readded { sa: sa.to_owned() },
            );
        }
    }
    let peer_kinds = super::ike::peer_differences(running, &desired);
    super::ike::readd_peer_users(running, &desired, &peer_kinds, &mut sp_changes);
    let sa_kinds: BTreeMap<&str, DifferenceKind> = sa_changes
        .into_iter()
        .map(|(name, fields)| {
            let kind = match (fields, desired.sa(name)) {
                (Some(fields), _) => DifferenceKind::Changed { fields },
                (None, Some(_)) => DifferenceKind::Added,
                (None, None) => DifferenceKind::Removed,
            };
            (name, kind)
        })
        .collect();
    let mut plan = Plan::default();
    let replaced = |change: &DifferenceKind| !matches!(change, DifferenceKind::Added);
    for name in sp_changes
        .iter()
        .filter(|(_, c)| replaced(c))
        .map(|(n, _)| n)
    {
        plan.items.push(BatchItem {
            line: None,
            change: Change::SpRemove(SpRemoveArgs {
                sp_name: Some(name.clone()),
                remove_all: false,
            }),
        });
    }
    for name in sa_kinds.iter().filter(|(_, c)| replaced(c)).map(|(n, _)| n) {
        plan.items.push(BatchItem {
            line: None,
            change: Change::SaRemove(SaRemoveArgs {
                sa_name: Some((*name).to_owned()),
                ..SaRemoveArgs::default()
            }),
        });
    }
    for name in peer_kinds
        .iter()
        .filter(|(_, c)| replaced(c))
        .map(|(n, _)| n)
    {
        plan.items.push(BatchItem {
            line: None,
            change: Change::PeerRemove(crate::model::PeerRemoveArgs {
                peer_name: Some(name.clone()),
            }),
        });
    }
    for item in file {
        let added = match &item.change {
            Change::SaAdd(args) => args
                .sa_name
                .as_deref()
                .and_then(|n| sa_kinds.get(n))
                .is_some_and(|c| !matches!(c, DifferenceKind::Removed)),
            Change::SpAdd(args) => args
                .sp_name
                .as_deref()
                .and_then(|n| sp_changes.get(n))
                .is_some_and(|c| !matches!(c, DifferenceKind::Removed)),
            Change::SaRemove(_) | Change::SpRemove(_) | Change::PeerRemove(_) => false,
            Change::PeerAdd(args) => args
                .peer_name
                .as_deref()
                .and_then(|n| peer_kinds.get(n))
                .is_some_and(|c| !matches!(c, DifferenceKind::Removed)),
            Change::SpAddIke(args) => args
                .sp
                .sp_name
                .as_deref()
                .and_then(|n| sp_changes.get(n))
                .is_some_and(|c| !matches!(c, DifferenceKind::Removed)),
        };
        if added {
            plan.items.push(resolved(running, item));
        }
    }
    plan.differences = sa_kinds
        .into_iter()
        .map(|(name, change)| ("sa", name.to_owned(), change))
        .chain(
            peer_kinds
                .into_iter()
                .map(|(name, change)| ("peer", name, change)),
        )
        .chain(
            sp_changes
                .into_iter()
                .map(|(name, change)| ("sp", name, change)),
        )
        .map(|(kind, name, change)| Difference {
            kind: kind.to_owned(),
            name,
            change,
        })
        .collect();
    Ok(plan)
}

/// Where a placeholder was used: the item's position, its line and the key option.
type Kept = HashMap<String, (usize, Option<u64>, &'static str)>;

/// The file's configuration on an empty SPD, with placeholders resolved; and the SAs whose key
/// a placeholder kept.
fn desired(running: &Spd, file: &[BatchItem]) -> Result<(Spd, Kept), ApplyError> {
    let mut spd = Spd::new();
    let mut kept = Kept::new();
    for (i, item) in file.iter().enumerate() {
        let (index, line) = (i + 1, item.line);
        let not_an_add = |what, kind| ApplyError::NotAnAdd {
            index,
            line,
            what,
            kind,
        };
        match &item.change {
            Change::SaRemove(_) => return Err(not_an_add("sa remove", "sa")),
            Change::SpRemove(_) => return Err(not_an_add("sp remove", "sp")),
            Change::SaAdd(args) => {
                if let Some(option) = placeholder_option(args) {
                    let name = args.sa_name.clone().unwrap_or_default();
                    if running.sa(&name).is_none() {
                        return Err(ApplyError::Placeholder {
                            index,
                            line,
                            option,
                            name,
                            reason: "and no sa of that name is running".to_owned(),
                        });
                    }
                    kept.insert(name, (index, line, option));
                }
            }
            Change::SpAdd(_) | Change::SpAddIke(_) => {}
            Change::PeerRemove(_) => return Err(not_an_add("ike peer remove", "peer")),
            Change::PeerAdd(args) => {
                if args.psk.as_deref() == Some(KEY_PLACEHOLDER)
                    && args
                        .peer_name
                        .as_deref()
                        .and_then(|n| running.peer(n))
                        .is_none()
                {
                    return Err(ApplyError::Placeholder {
                        index,
                        line,
                        option: opt::PSK,
                        name: args.peer_name.clone().unwrap_or_default(),
                        reason: "and no peer of that name is running".to_owned(),
                    });
                }
            }
        }
        let resolved = resolved(running, item);
        change(&mut spd, &resolved.change).map_err(|source| ItemError {
            index,
            line,
            source,
        })?;
    }
    Ok((spd, kept))
}

/// The first key option of `args` holding the placeholder.
fn placeholder_option(args: &SaAddArgs) -> Option<&'static str> {
    let is = |key: &Option<String>| key.as_deref() == Some(KEY_PLACEHOLDER);
    if is(&args.encryption_key) {
        Some(opt::ENCRYPTION_KEY)
    } else if is(&args.integrity_key) {
        Some(opt::INTEGRITY_KEY)
    } else {
        None
    }
}

/// `item` with each key placeholder replaced by the running SA's key, when there is one.
fn resolved(running: &Spd, item: &BatchItem) -> BatchItem {
    if let Change::PeerAdd(_) = &item.change {
        return super::ike::resolved_peer(running, item, KEY_PLACEHOLDER);
    }
    let Change::SaAdd(args) = &item.change else {
        return item.clone();
    };
    let Some(sa) = args.sa_name.as_deref().and_then(|n| running.sa(n)) else {
        return item.clone();
    };
    let keep = |given: &Option<String>, key: &crate::model::Key| match given.as_deref() {
        Some(KEY_PLACEHOLDER) => Some(format!("0x{}", hex::encode(key.as_bytes()))),
        _ => given.clone(),
    };
    let mut args = args.clone();
    args.encryption_key = keep(&args.encryption_key, &sa.encryption_key);
    args.integrity_key = keep(&args.integrity_key, &sa.integrity_key);
    BatchItem {
        line: item.line,
        change: Change::SaAdd(args),
    }
}

/// Per SA name in either configuration that differs: `None` if it is in one only, else the
/// options that differ.
fn sa_differences<'a>(
    running: &'a Spd,
    desired: &'a Spd,
) -> BTreeMap<&'a str, Option<Vec<String>>> {
    let mut out = BTreeMap::new();
    // IKE's SAs are not configuration: apply neither lists nor removes them.
    for sa in running
        .sas()
        .iter()
        .filter(|sa| running.ike_owner(&sa.name).is_none())
    {
        match desired.sa(&sa.name) {
            None => {
                out.insert(sa.name.as_str(), None);
            }
            Some(want) => {
                let fields = sa_fields(sa, want);
                if !fields.is_empty() {
                    out.insert(sa.name.as_str(), Some(fields));
                }
            }
        }
    }
    for sa in desired.sas() {
        if running.sa(&sa.name).is_none() {
            out.insert(sa.name.as_str(), None);
        }
    }
    out
}

/// The `sa add` options (without `--`) on which `a` and `b` differ.
fn sa_fields(a: &Sa, b: &Sa) -> Vec<String> {
    let differs = [
        (opt::SA_SOURCE, a.source != b.source),
        (opt::SA_DESTINATION, a.destination != b.destination),
        (opt::SA_MODE, a.mode != b.mode),
        (opt::SA_SPI, a.spi != b.spi),
        (opt::ENCRYPTION_ALGORITHM, a.encryption != b.encryption),
        (opt::ENCRYPTION_KEY, a.encryption_key != b.encryption_key),
        (opt::INTEGRITY_ALGORITHM, a.integrity != b.integrity),
        (opt::INTEGRITY_KEY, a.integrity_key != b.integrity_key),
        (opt::UDP_ENCAPSULATION, a.udp_encap != b.udp_encap),
    ];
    named(&differs)
}

/// Per SP name in either configuration that differs: added, removed or changed.
fn sp_differences(running: &Spd, desired: &Spd) -> BTreeMap<String, DifferenceKind> {
    let mut out = BTreeMap::new();
    for sp in running.sps() {
        let kind = match desired.sp(&sp.name) {
            None => DifferenceKind::Removed,
            Some(want) => {
                let fields = sp_fields(sp, want);
                if fields.is_empty() {
                    continue;
                }
                DifferenceKind::Changed { fields }
            }
        };
        out.insert(sp.name.clone(), kind);
    }
    for sp in desired.sps() {
        if running.sp(&sp.name).is_none() {
            out.insert(sp.name.clone(), DifferenceKind::Added);
        }
    }
    out
}

/// The `sp add` options (without `--`) on which `a` and `b` differ.
fn sp_fields(a: &Sp, b: &Sp) -> Vec<String> {
    let differs = [
        (opt::SP_SOURCE, a.source != b.source),
        (opt::SP_DESTINATION, a.destination != b.destination),
        (opt::SOURCE_PORT, a.source_port != b.source_port),
        (
            opt::DESTINATION_PORT,
            a.destination_port != b.destination_port,
        ),
        (opt::UPPER_LAYER_PROTOCOL, a.protocol != b.protocol),
        (opt::FLOW_DIRECTION, a.direction != b.direction),
        (opt::ACTION, a.action != b.action),
        (opt::SP_MODE, a.mode != b.mode),
        // An SP that names an IKE peer is bound by IKE, not by configuration.
        (
            opt::SA_NAME,
            a.sa_name != b.sa_name && a.ike_peer.is_none() && b.ike_peer.is_none(),
        ),
        (opt::PRIORITY, a.priority != b.priority),
        (opt::IKE_PEER, a.ike_peer != b.ike_peer),
    ];
    named(&differs)
}

fn named(differs: &[(&str, bool)]) -> Vec<String> {
    differs
        .iter()
        .filter(|(_, differs)| *differs)
        .map(|(option, _)| option.trim_start_matches('-').to_owned())
        .collect()
}

/// The running configuration for `export`: SAs by name, SPs in creation order (as `sp list`
/// shows them, counters zero), keys only if `with_keys`.
pub fn configuration(spd: &Spd, generation: u64, with_keys: bool) -> Configuration {
    let mut sas: Vec<ExportedSa> = spd
        .sas()
        .iter()
        .map(|sa| ExportedSa {
            name: sa.name.clone(),
            source: sa.source,
            destination: sa.destination,
            mode: sa.mode,
            spi: sa.spi,
            encryption_algorithm: sa.encryption,
            integrity_algorithm: sa.integrity,
            encryption_key: with_keys.then(|| sa.encryption_key.clone()),
            integrity_key: with_keys.then(|| sa.integrity_key.clone()),
            udp_encap: sa.udp_encap,
        })
        .collect();
    sas.sort_by(|a, b| a.name.cmp(&b.name));
    let mut sps = super::control::sp_entries(spd, &super::port::Counters::default());
    let mut ike_peers = BTreeMap::new();
    for entry in &mut sps {
        if let Some(peer) = spd.sp(&entry.name).and_then(|sp| sp.ike_peer.clone()) {
            // The binding is IKE's, not configuration.
            entry.sa_name = None;
            ike_peers.insert(entry.name.clone(), peer);
        }
    }
    Configuration {
        generation,
        ike_sas: sas
            .iter()
            .filter(|sa| spd.ike_owner(&sa.name).is_some())
            .map(|sa| sa.name.clone())
            .collect(),
        sas,
        sps,
        peers: super::ike::exported_peers(spd, with_keys),
        ike_peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::batch;
    use crate::model::SpAddArgs;

    const ENC: &str = "0x00112233445566778899aabbccddeeff";
    const INTEG: &str = "0x0102030405060708090a0b0c0d0e0f1011121314";

    fn sa(name: &str, spi: &str, enc_key: &str) -> Change {
        Change::SaAdd(SaAddArgs {
            sa_source: Some("2001:db8::1".into()),
            sa_destination: Some("2001:db8::2".into()),
            sa_mode: Some("transport".into()),
            sa_spi: Some(spi.into()),
            encryption_algorithm: Some("aes128-cbc".into()),
            encryption_key: Some(enc_key.into()),
            integrity_algorithm: Some("hmac-sha1".into()),
            integrity_key: Some(INTEG.into()),
            sa_name: Some(name.into()),
            udp_encapsulation: None,
        })
    }

    fn sp(name: &str, sa: &str, port: &str) -> Change {
        Change::SpAdd(SpAddArgs {
            sp_source: Some("2001:db8::1/128".into()),
            sp_destination: Some("2001:db8::2/128".into()),
            source_port: Some("any".into()),
            destination_port: Some(port.into()),
            upper_layer_protocol: Some("tcp".into()),
            flow_direction: Some("out".into()),
            sa_name: Some(sa.into()),
            sp_name: Some(name.into()),
            ..SpAddArgs::default()
        })
    }

    fn file(changes: Vec<Change>) -> Vec<BatchItem> {
        changes
            .into_iter()
            .zip(1..)
            .map(|(change, line)| BatchItem {
                line: Some(line),
                change,
            })
            .collect()
    }

    fn running() -> Spd {
        let items = file(vec![
            sa("sa1", "0x100", ENC),
            sa("sa2", "0x200", ENC),
            sp("p1", "sa1", "80"),
            sp("p2", "sa2", "443"),
        ]);
        batch::apply(&Spd::new(), &items).expect("the base").0
    }

    fn kinds(plan: &Plan) -> Vec<(String, String, DifferenceKind)> {
        plan.differences
            .iter()
            .map(|d| (d.kind.clone(), d.name.clone(), d.change.clone()))
            .collect()
    }

    /// The plan's batch applied to `running`: the file's configuration, so planning again finds
    /// nothing.
    fn assert_converges(running: &Spd, items: &[BatchItem]) -> Spd {
        let plan = plan(running, items).expect("a valid file");
        let (next, _) = batch::apply(running, &plan.items).expect("the plan's batch applies");
        let again = super::plan(&next, items).expect("the file again");
        assert!(
            again.items.is_empty() && again.differences.is_empty(),
            "{:?}",
            kinds(&again)
        );
        next
    }

    #[test]
    fn the_same_configuration_is_no_difference() {
        let running = running();
        let items = file(vec![
            sa("sa2", "0x200", ENC),
            sa("sa1", "0x100", ENC),
            sp("p1", "sa1", "80"),
            sp("p2", "sa2", "443"),
        ]);
        let plan = plan(&running, &items).expect("a valid file");
        assert!(plan.items.is_empty() && plan.differences.is_empty());
    }

    #[test]
    fn a_changed_key_is_named_and_its_policies_go_with_it() {
        let running = running();
        let items = file(vec![
            sa("sa1", "0x100", "0xffeeddccbbaa99887766554433221100"),
            sa("sa2", "0x200", ENC),
            sa("sa3", "0x300", ENC),
            sp("p1", "sa1", "80"),
            sp("p2", "sa2", "8443"),
        ]);
        let plan = plan(&running, &items).expect("a valid file");
        let changed = |fields: &[&str]| DifferenceKind::Changed {
            fields: fields.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(
            kinds(&plan),
            vec![
                ("sa".into(), "sa1".into(), changed(&["encryption-key"])),
                ("sa".into(), "sa3".into(), DifferenceKind::Added),
                (
                    "sp".into(),
                    "p1".into(),
                    DifferenceKind::Readded { sa: "sa1".into() }
                ),
                ("sp".into(), "p2".into(), changed(&["destination-port"])),
            ]
        );
        // Removes first (SPs, then SAs), then the adds in file order.
        let shape: Vec<String> = plan
            .items
            .iter()
            .map(|i| match &i.change {
                Change::SpRemove(a) => format!("-sp {}", a.sp_name.as_deref().unwrap_or("")),
                Change::SaRemove(a) => format!("-sa {}", a.sa_name.as_deref().unwrap_or("")),
                Change::SaAdd(a) => format!("+sa {}", a.sa_name.as_deref().unwrap_or("")),
                Change::SpAdd(a) => format!("+sp {}", a.sp_name.as_deref().unwrap_or("")),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "-sp p1", "-sp p2", "-sa sa1", "+sa sa1", "+sa sa3", "+sp p1", "+sp p2"
            ]
        );
        // The adds keep their lines, for error messages.
        assert_eq!(plan.items[3].line, Some(1));
        let next = assert_converges(&running, &items);
        assert_eq!(
            next.sa("sa1").map(|s| s.encryption_key.as_bytes()[0]),
            Some(0xff)
        );
        // Keys are named, never shown.
        assert!(!format!("{:?}", plan.differences).contains("ffeedd"));
    }

    #[test]
    fn a_renamed_sa_may_keep_its_spi_and_removed_objects_go() {
        let running = running();
        let items = file(vec![sa("sa9", "0x100", ENC), sp("p9", "sa9", "80")]);
        let plan = plan(&running, &items).expect("a valid file");
        assert_eq!(plan.differences.len(), 6, "{:?}", kinds(&plan));
        let next = assert_converges(&running, &items);
        assert_eq!((next.sas().len(), next.sps().len()), (1, 1));
    }

    #[test]
    fn the_placeholder_keeps_the_key_of_an_unchanged_sa_only() {
        let running = running();
        let redacted = |spi: &str| {
            let Change::SaAdd(mut args) = sa("sa1", spi, ENC) else {
                unreachable!()
            };
            args.encryption_key = Some(KEY_PLACEHOLDER.into());
            args.integrity_key = Some(KEY_PLACEHOLDER.into());
            Change::SaAdd(args)
        };
        let items = |first: Change| {
            file(vec![
                sa("sa2", "0x200", ENC),
                first,
                sp("p1", "sa1", "80"),
                sp("p2", "sa2", "443"),
            ])
        };
        let same = plan(&running, &items(redacted("0x100"))).expect("an unchanged sa");
        assert!(same.items.is_empty() && same.differences.is_empty());
        let changed = plan(&running, &items(redacted("0x101"))).expect_err("a changed sa");
        assert_eq!(
            changed.to_string(),
            "line 2 (item 2): --encryption-key: REDACTED is the placeholder xipsec export \
             prints instead of a key; it keeps the running key of sa 'sa1' only while that sa \
             is otherwise unchanged, but it differs in sa-spi: write the key (xipsec export \
             --with-keys FILE writes them)"
        );
        let fresh = plan(&Spd::new(), &items(redacted("0x100"))).expect_err("no running sa");
        assert!(
            fresh
                .to_string()
                .contains("and no sa of that name is running"),
            "{fresh}"
        );
    }

    #[test]
    fn removes_and_bad_lines_are_named() {
        let running = running();
        let remove = Change::SpRemove(SpRemoveArgs {
            sp_name: Some("p1".into()),
            remove_all: false,
        });
        for at in 0..3 {
            let mut changes = vec![
                sa("sa1", "0x100", ENC),
                sp("p1", "sa1", "80"),
                sp("p2", "sa1", "81"),
            ];
            changes[at] = remove.clone();
            let err = plan(&running, &file(changes)).expect_err("a remove line");
            assert!(
                err.to_string().starts_with(&format!(
                    "line {} (item {}): sp remove cannot be in an apply file",
                    at + 1,
                    at + 1
                )),
                "{err}"
            );
        }
        let bad = plan(
            &running,
            &file(vec![sa("sa1", "0x10", ENC), sp("p1", "sa1", "80")]),
        )
        .expect_err("a reserved spi");
        assert!(
            bad.to_string()
                .starts_with("line 1 (item 1): --sa-spi: 0x10 is reserved"),
            "{bad}"
        );
    }

    #[test]
    fn export_lists_sas_by_name_and_sps_by_age_without_keys() {
        let config = configuration(&running(), 3, false);
        assert_eq!(config.generation, 3);
        let names: Vec<&str> = config.sas.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sa1", "sa2"]);
        assert!(config.sas.iter().all(|s| s.encryption_key.is_none()));
        let sps: Vec<&str> = config.sps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(sps, ["p1", "p2"]);
        let keyed = configuration(&running(), 3, true);
        assert_eq!(
            keyed.sas[0]
                .encryption_key
                .as_ref()
                .map(crate::model::Key::len),
            Some(16)
        );
    }
}

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
use super::protocol::{
    BatchItem, Change, Configuration, Difference, DifferenceKind, ExportedSa, SpEntry,
};
use crate::model::{Sa, SaAddArgs, SaRemoveArgs, Sp, Spd, SpRemoveArgs, opt};

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
    for name in sp_changes.iter().filter(|(_, c)| replaced(c)).map(|(n, _)| n) {
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
            Change::SaRemove(_) | Change::SpRemove(_) => false,
        };
        if added {
            plan.items.push(resolved(running, item));
        }
    }
    plan.differences = sa_kinds
        .into_iter()
        .map(|(name, change)| ("sa", name.to_owned(), change))
        .chain(sp_changes.into_iter().map(|(name, change)| ("sp", name, change)))
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
            Change::SpAdd(_) => {}
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
fn sa_differences<'a>(running: &'a Spd, desired: &'a Spd) -> BTreeMap<&'a str, Option<Vec<String>>> {
    let mut out = BTreeMap::new();
    for sa in running.sas() {
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
        (opt::DESTINATION_PORT, a.destination_port != b.destination_port),
        (opt::UPPER_LAYER_PROTOCOL, a.protocol != b.protocol),
        (opt::FLOW_DIRECTION, a.direction != b.direction),
        (opt::ACTION, a.action != b.action),
        (opt::SP_MODE, a.mode != b.mode),
        (opt::SA_NAME, a.sa_name != b.sa_name),
        (opt::PRIORITY, a.priority != b.priority),
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

/// The running configuration for `export`: SAs by name, SPs in creation order, keys only if
/// `with_keys`.
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
        })
        .collect();
    sas.sort_by(|a, b| a.name.cmp(&b.name));
    let mut sps: Vec<&Sp> = spd.sps().iter().collect();
    sps.sort_by_key(|sp| sp.seq);
    Configuration {
        generation,
        sas,
        sps: sps
            .into_iter()
            .map(|sp| SpEntry {
                name: sp.name.clone(),
                source: sp.source,
                destination: sp.destination,
                source_port: sp.source_port,
                destination_port: sp.destination_port,
                protocol: sp.protocol,
                direction: sp.direction,
                action: sp.action,
                mode: sp.mode,
                sa_name: sp.sa_name.clone(),
                priority: sp.priority,
                packets: 0,
                bytes: 0,
            })
            .collect(),
    }
}

//! Making the core's tables equal an SPD.
//!
//! Contract of [`rebuild`]: an SA whose identity (SPI, mode, endpoints, algorithms, keys) is
//! unchanged keeps its `OutboundSa` (sequence number, reservation), `InboundSa` (replay window,
//! ceiling) and counters; other SAs are keyed afresh, resuming after their persisted
//! reservation and above their persisted ceiling (read through [`Persisted`], memory only);
//! removed ones are dropped. It either applies completely or, on a key error, changes nothing.
//! Flow caches start a new generation. What must then be written (the new SAs' reservations,
//! the removed SAs' settled ceilings) is returned in [`Rebuilt`] for the I/O layer to write
//! after releasing the tables.
//!
//! An SA IKE negotiated (`Spd::ike_owner`) has keys that die with the process: it starts at
//! sequence number 1 with every number reserved (nothing written), no IV epoch, and a replay
//! gate kept in memory only (`Ceiling::in_memory`: no ceiling ever written or settled).
//!
//! An AES-GCM SA keyed afresh gets the next IV epoch of its key (see `seq`): one above the
//! persisted one and above every epoch handed out in this rebuild, returned as one more
//! reservation beside the SA's own, so both reach the disk in one write before the SA's first
//! packet (which waits for its own reservation). A key whose epochs are used up cannot be
//! keyed ([`ConfigError::IvExhausted`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tracing::warn;

use super::ceiling::{Ceiling, KeyId};
use super::inbound::{InSa, Inbound};
use super::outbound::{OutSa, Outbound, SeqReservation};
use super::sa::{Backoff, SaIdentity, Volume};
use super::stats::SaCells;
use crate::classifier::CompiledSpd;
use crate::crypto::{ConfigError, InboundSa, OutboundSa};
use crate::engine::mss;
use crate::engine::seq::{IV_EPOCH_SPI, RESERVATION_STEP};
use crate::model::Spd;

/// What the stores hold, as `rebuild` reads it (in memory, no I/O).
pub trait Persisted {
    /// The persisted sequence reservation of SA `name` with `spi`.
    fn reservation(&self, name: &str, spi: u32) -> Option<u32>;
    /// The persisted replay ceiling of SA `spi` with `key_id`.
    fn ceiling(&self, spi: u32, key_id: &KeyId) -> Option<u32>;
}

/// An SA that could not be keyed; nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("cannot key sa {name}")]
pub struct KeyError {
    pub name: String,
    #[source]
    pub source: ConfigError,
}

/// What a rebuild leaves to the I/O layer.
pub struct Rebuilt {
    /// The SAs' counters by `Sa::id`.
    pub registry: BTreeMap<u32, Arc<SaCells>>,
    /// Reservations of the SAs keyed afresh: write them, then `Outbound::reservation_written`.
    pub reservations: Vec<SeqReservation>,
    /// Removed (or rekeyed) inbound SAs accept nothing any more: their ceilings can come down
    /// to what they accepted (`ReplayStore::settle`).
    pub settle: Vec<(u32, KeyId, u32)>,
    /// The live SAs, for pruning the stores.
    pub live_sas: HashSet<(String, u32)>,
    pub live_ceilings: HashSet<(u32, KeyId)>,
}

/// Makes `out` and `inb` equal `spd`, classifying with `classifier` (built from `spd`); see the
/// module contract.
///
/// # Errors
/// [`KeyError`] when an SA cannot be keyed; nothing changed then.
pub fn rebuild(
    spd: &Spd,
    classifier: Arc<CompiledSpd>,
    out: &mut Outbound,
    inb: &mut Inbound,
    persisted: &dyn Persisted,
) -> Result<Rebuilt, KeyError> {
    // Pass 1: key every SA that cannot keep its state; fail before touching anything.
    let kept = |identity: &SaIdentity| {
        let kept_out = out.sas.iter().any(|e| e.identity == *identity);
        let kept_in = inb.sas.iter().any(|e| e.identity == *identity);
        kept_out && kept_in
    };
    let identities: Vec<SaIdentity> = spd.sas().iter().map(SaIdentity::of).collect();
    let mut fresh = Vec::with_capacity(identities.len());
    // The IV epochs handed out in this rebuild, by entry: two fresh SAs with one key get two.
    let mut epochs: HashMap<String, u32> = HashMap::new();
    for (sa, identity) in spd.sas().iter().zip(&identities) {
        if kept(identity) {
            fresh.push(None);
            continue;
        }
        let config = identity.config();
        let keyed = |source| KeyError {
            name: sa.name.clone(),
            source,
        };
        let mut tx = OutboundSa::new(&config).map_err(keyed)?;
        let rx = InboundSa::new(&config).map_err(keyed)?;
        // An SA IKE negotiated has keys no restart will see again: no IV epoch to persist.
        let epoch = match identity
            .iv_entry()
            .filter(|_| spd.ike_owner(&sa.name).is_none())
        {
            None => None,
            Some(entry) => {
                let last = epochs
                    .get(&entry)
                    .copied()
                    .or_else(|| persisted.reservation(&entry, IV_EPOCH_SPI))
                    .unwrap_or(0);
                let next = last.checked_add(1).ok_or_else(|| {
                    keyed(ConfigError::IvExhausted {
                        encryption: identity.encryption().as_str(),
                    })
                })?;
                tx.use_iv_epoch(next);
                epochs.insert(entry.clone(), next);
                Some(SeqReservation {
                    sa_name: entry,
                    spi: IV_EPOCH_SPI,
                    up_to: next,
                })
            }
        };
        fresh.push(Some((tx, rx, epoch)));
    }

    // Pass 2: commit.
    let mut old_out: HashMap<u32, OutSa> = out.sas.drain(..).map(|e| (e.identity.spi, e)).collect();
    let mut old_in: HashMap<u32, InSa> = inb.sas.drain(..).map(|e| (e.identity.spi, e)).collect();
    let mut registry = BTreeMap::new();
    let mut reservations = Vec::new();
    for ((sa, identity), fresh) in spd.sas().iter().zip(identities).zip(fresh) {
        let (out_entry, in_entry) = match fresh {
            None => {
                let mut o = old_out.remove(&sa.spi).expect("checked in pass 1");
                let mut i = old_in.remove(&sa.spi).expect("checked in pass 1");
                o.name.clone_from(&sa.name);
                i.name.clone_from(&sa.name);
                (o, i)
            }
            Some((mut tx, mut rx, epoch)) => {
                if let Some(epoch) = epoch {
                    warn!(
                        sa = %sa.name, spi = format_args!("{:#x}", sa.spi), iv_epoch = epoch.up_to,
                        "{}", crate::model::GCM_STATIC_KEY_WARNING
                    );
                    reservations.push(epoch);
                }
                // An `ike` SA's keys die with the process, so its sequence numbers need no
                // reservation on disk: all of them are this process's to use.
                let ike = spd.ike_owner(&sa.name).is_some();
                let reserved = if ike {
                    0
                } else {
                    persisted.reservation(&sa.name, sa.spi).unwrap_or(0)
                };
                tx.resume_after(reserved);
                let reserved = if ike { u32::MAX } else { reserved };
                let in_flight = reserved < u32::MAX;
                if in_flight {
                    reservations.push(SeqReservation {
                        sa_name: sa.name.clone(),
                        spi: sa.spi,
                        up_to: reserved.saturating_add(RESERVATION_STEP),
                    });
                }
                // Nothing at or below the persisted ceiling was ever accepted for the last time:
                // refuse it all (see `replay_store`).
                let key_id = identity.key_id();
                // An `ike` SA's replay state stays in memory (its keys never reach the disk).
                let ceiling = if ike {
                    Ceiling::in_memory()
                } else {
                    let value = persisted.ceiling(sa.spi, &key_id).unwrap_or(0);
                    rx.start_above(value);
                    Ceiling::new(value)
                };
                let cells = Arc::new(SaCells::default());
                (
                    OutSa {
                        identity: identity.clone(),
                        name: sa.name.clone(),
                        sa: tx,
                        reserved,
                        wanted: None,
                        in_flight,
                        exhausted_logged: false,
                        volume: Volume::new(identity.encryption(), out.tdes_block_limit),
                        seq_backoff: Backoff::default(),
                        cells: Arc::clone(&cells),
                    },
                    InSa {
                        volume: Volume::new(identity.encryption(), inb.tdes_block_limit),
                        identity,
                        name: sa.name.clone(),
                        sa: rx,
                        key_id,
                        ceiling,
                        cells,
                    },
                )
            }
        };
        registry.insert(sa.id, Arc::clone(&out_entry.cells));
        out.sas.push(out_entry);
        inb.sas.push(in_entry);
    }
    let settle = old_in
        .values()
        .filter(|e| e.ceiling.is_persisted())
        .filter_map(|e| {
            let highest = e.sa.replay_window().highest();
            (highest > 0).then_some((e.identity.spi, e.key_id, highest))
        })
        .collect();

    out.classifier = Arc::clone(&classifier);
    out.by_name = out
        .sas
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.clone(), i))
        .collect();
    out.cache.invalidate();
    out.last = None;
    out.wants = out.sas.iter().any(|e| e.wanted.is_some());
    inb.classifier = classifier;
    // Only SAs an inbound ipsec SP names (or named before: a rotation) receive; ESP under
    // another SPI of ours (say, an outbound SA's) is unknown, as it is to XDP.
    inb.by_spi = inb
        .sas
        .iter()
        .enumerate()
        .filter(|(_, e)| spd.is_inbound_sa(&e.name))
        .map(|(i, e)| (e.identity.spi, i))
        .collect();
    inb.cache.invalidate();
    let clamp = mss::for_overheads(
        out.sas
            .iter()
            .map(|e| e.sa.max_overhead() + mss::encap_overhead(e.identity.udp_encap)),
    );
    out.mss = clamp;
    inb.mss = clamp;
    // A policy's counters end with it (its id may be reused by a newer policy).
    let live: HashSet<(u32, u32)> = spd.sps().iter().map(|sp| (sp.id, sp.seq)).collect();
    inb.sp_hits.retain(|key, _| live.contains(key));
    Ok(Rebuilt {
        registry,
        reservations,
        settle,
        live_sas: spd
            .sas()
            .iter()
            .filter(|s| spd.ike_owner(&s.name).is_none())
            .map(|s| (s.name.clone(), s.spi))
            .collect(),
        live_ceilings: inb
            .sas
            .iter()
            .filter(|e| e.ceiling.is_persisted())
            .map(|e| (e.identity.spi, e.key_id))
            .collect(),
    })
}

//! Request handling: the one place that changes the daemon's state.
//!
//! Every request runs under one lock, so changes are serialised. A change is computed on a clone
//! of the [`Spd`], pushed to the datapath, persisted, and only then swapped in and acknowledged.
//! If any step fails nothing changes: the datapath is synced back to the old state and the client
//! gets the error.

use std::sync::Mutex;
use std::time::Instant;

use tracing::{error, info, warn};

use super::port::{Counters, Datapath};
use super::protocol::{Request, Response, SaEntry, SpEntry, StatsReport, StatusReport};
use super::state::StateStore;
use crate::model::{Sa, Sp, Spd};

/// Facts about the daemon that `status` reports and that never change while it runs.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) socket: String,
    pub(crate) datapath: String,
    pub(crate) interfaces: Vec<String>,
    pub(crate) xdp_mode: String,
    pub(crate) pin_dir: String,
}

struct Inner {
    spd: Spd,
    datapath: Box<dyn Datapath>,
    store: StateStore,
}

/// The daemon's state and the lock that serialises every request.
pub(crate) struct Control {
    inner: Mutex<Inner>,
    identity: Identity,
    started: Instant,
}

impl Control {
    pub(crate) fn new(
        spd: Spd,
        datapath: Box<dyn Datapath>,
        store: StateStore,
        identity: Identity,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                spd,
                datapath,
                store,
            }),
            identity,
            started: Instant::now(),
        }
    }

    /// Answer one request. Blocking (datapath sync, fsync): call it off the async executor.
    pub(crate) fn handle(&self, request: Request) -> Response {
        // A panic while the lock was held cannot have swapped in a half-made state (the swap is
        // the last step), so the state behind a poisoned lock is still consistent.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match request {
            Request::SaList => {
                let counters = inner.counters();
                Response::SaList(sa_entries(&inner.spd, &counters))
            }
            Request::SpList => {
                let counters = inner.counters();
                Response::SpList(sp_entries(&inner.spd, &counters))
            }
            Request::Stats => Response::Stats(StatsReport {
                reasons: inner.counters().reasons,
            }),
            Request::Status => Response::Status(StatusReport {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                pid: std::process::id(),
                socket: self.identity.socket.clone(),
                state_file: inner.store.path().display().to_string(),
                datapath: self.identity.datapath.clone(),
                interfaces: self.identity.interfaces.clone(),
                xdp_mode: self.identity.xdp_mode.clone(),
                pin_dir: self.identity.pin_dir.clone(),
                sas: inner.spd.sas().len() as u64,
                sps: inner.spd.sps().len() as u64,
                uptime_seconds: self.started.elapsed().as_secs(),
            }),
            Request::SaAdd(args) => inner.change(|spd| {
                let sa = spd.add_sa(&args)?;
                info!(
                    sa = %sa.name, spi = format_args!("{:#x}", sa.spi), mode = ?sa.mode,
                    "sa added"
                );
                Ok(Response::Added {
                    name: sa.name.clone(),
                })
            }),
            Request::SaRemove(args) => inner.change(|spd| {
                let removed = spd.remove_sa(&args)?;
                let names: Vec<String> = removed.into_iter().map(|sa| sa.name).collect();
                info!(sas = ?names, "sa removed");
                Ok(Response::Removed { names })
            }),
            Request::SpAdd(args) => inner.change(|spd| {
                let sp = spd.add_sp(&args)?;
                info!(
                    sp = %sp.name, direction = ?sp.direction, action = ?sp.action,
                    sa = sp.sa_name.as_deref().unwrap_or("-"), "sp added"
                );
                Ok(Response::Added {
                    name: sp.name.clone(),
                })
            }),
            Request::SpRemove(args) => inner.change(|spd| {
                let removed = spd.remove_sp(&args)?;
                let names: Vec<String> = removed.into_iter().map(|sp| sp.name).collect();
                info!(sps = ?names, "sp removed");
                Ok(Response::Removed { names })
            }),
        }
    }
}

impl Inner {
    /// Counters for a listing. A datapath that cannot report them must not hide the policy
    /// itself, so the listing shows zeros and the failure goes to the log.
    fn counters(&self) -> Counters {
        self.datapath.counters().unwrap_or_else(|e| {
            warn!(error = %format!("{e:#}"), "cannot read counters");
            Counters::default()
        })
    }

    /// Apply `edit` to a copy of the state, then sync, persist and swap; see the module docs.
    fn change(
        &mut self,
        edit: impl FnOnce(&mut Spd) -> Result<Response, crate::model::ModelError>,
    ) -> Response {
        let mut next = self.spd.clone();
        let response = match edit(&mut next) {
            Ok(response) => response,
            Err(e) => return Response::Error {
                message: e.to_string(),
            },
        };
        if let Err(e) = self.datapath.sync(&next) {
            error!(error = %format!("{e:#}"), "datapath refused the change; restoring");
            return Response::Error {
                message: format!("the datapath refused the change: {e:#}{}", self.restore()),
            };
        }
        if let Err(e) = self.store.save(&next) {
            error!(error = %e, "cannot persist the change; restoring");
            return Response::Error {
                message: format!("cannot save the state, nothing changed: {e}{}", self.restore()),
            };
        }
        self.spd = next;
        response
    }

    /// Sync the datapath back to the current (old) state; text to append to the error if that
    /// fails too.
    fn restore(&mut self) -> String {
        match self.datapath.sync(&self.spd) {
            Ok(()) => String::new(),
            Err(e) => {
                error!(error = %format!("{e:#}"), "cannot restore the datapath to the saved state");
                format!(" (and restoring the previous datapath state failed: {e:#})")
            }
        }
    }
}

fn sa_entries(spd: &Spd, counters: &Counters) -> Vec<SaEntry> {
    let mut sas: Vec<&Sa> = spd.sas().iter().collect();
    sas.sort_by(|a, b| a.name.cmp(&b.name));
    sas.into_iter()
        .map(|sa| {
            let count = counters.sa.get(&sa.id).copied().unwrap_or_default();
            let mut in_use_by: Vec<String> =
                spd.sa_users(&sa.name).into_iter().map(|sp| sp.name.clone()).collect();
            in_use_by.sort();
            SaEntry {
                name: sa.name.clone(),
                source: sa.source,
                destination: sa.destination,
                mode: sa.mode,
                spi: sa.spi,
                encryption_algorithm: sa.encryption,
                integrity_algorithm: sa.integrity,
                owner: "user".to_owned(),
                in_use_by,
                packets: count.packets,
                bytes: count.bytes,
                auth_failures: count.auth_failures,
                replay_drops: count.replay_drops,
                errors: count.errors,
            }
        })
        .collect()
}

fn sp_entries(spd: &Spd, counters: &Counters) -> Vec<SpEntry> {
    // Creation order: what the user typed, in the order they typed it.
    let mut sps: Vec<&Sp> = spd.sps().iter().collect();
    sps.sort_by_key(|sp| sp.seq);
    sps.into_iter()
        .map(|sp| {
            let count = counters.sp.get(&sp.id).copied().unwrap_or_default();
            SpEntry {
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
                packets: count.packets,
                bytes: count.bytes,
            }
        })
        .collect()
}

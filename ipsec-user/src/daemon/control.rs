//! Request handling: the one place that changes the daemon's state.
//!
//! One worker thread owns the state and answers every request, so changes are serialised. A
//! change is computed on a clone of the [`Spd`], pushed to the datapath, persisted, and only then
//! swapped in and acknowledged. If any step fails nothing changes: the datapath is synced back to
//! the old state and the client gets the error.
//!
//! Group commit: changes that are already queued when the worker picks up work are applied one
//! after another to the same clone (each checked against the ones before it, exactly as if run
//! alone) and committed with one sync and one fsync. A change is acknowledged only after its
//! batch is committed; if the commit fails, every change of the batch gets the error and none is
//! applied. Reads answer from the committed state, so they never show an unacknowledged change.
//!
//! Generations: each committed change moves the configuration generation on by one; the
//! generation is persisted with the state and each acknowledgement carries the one its change
//! created.
//!
//! Batches ([`Request::Batch`]) are changes too, but never share a commit: the changes queued
//! before one are committed first, then the batch is checked as a whole on a copy (`batch`)
//! and, if every item is accepted, committed exactly like one change: one datapath sync (one
//! epoch flip), one state write, one answer. A batch that names a generation other than the
//! committed one is refused before anything is checked.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::batch::{self, Outcome};
use super::port::{Counters, Datapath};
use super::protocol::{
    Batch, Change, MetricsReport, Request, Response, SaEntry, SpEntry, StatsReport, StatusReport,
};
use super::state::{Saved, StateStore};
use crate::model::{Chain, ModelError, Sa, Sp, Spd};

/// Most changes committed together: bounds the latency a large batch adds to its first change.
const MAX_BATCH: usize = 256;

/// Facts about the daemon that `status` reports and that never change while it runs.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) socket: String,
    pub(crate) datapath: String,
    pub(crate) interfaces: Vec<String>,
    pub(crate) xdp_mode: String,
    pub(crate) pin_dir: String,
}

enum Job {
    Request(Box<Request>, oneshot::Sender<Response>),
    Stop,
    /// A CHILD_SA to install or remove (see `ike`), answered with an error message or nothing.
    Ike(super::ike::IkeJob, oneshot::Sender<Result<(), String>>),
    /// The IKE task's command channel: from now on it hears of every committed change.
    AttachIke(super::ike::IkeLink),
    /// Which `on-demand` peers had packets of an unbound SP since last asked (see `ike`).
    IkeDemand(oneshot::Sender<Vec<String>>),
    /// Rekeyed CHILD_SAs waiting to send: those ESP arrived on may send now (see `ike`).
    IkeEspSeen,
}

/// Handle to the worker thread that owns the state; one clone per client connection.
#[derive(Clone)]
pub(crate) struct Control {
    jobs: mpsc::Sender<Job>,
}

/// Joins the worker on [`Worker::stop`]; the state is consistent on disk once it returns.
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

impl Worker {
    /// Finish the requests queued so far, then stop. Blocking.
    pub(crate) fn stop(self) {
        let _ = self.jobs.send(Job::Stop);
        if self.thread.join().is_err() {
            error!("the state worker panicked");
        }
    }
}

/// Start the worker that owns `saved`, `datapath` and `store`.
pub(crate) fn start(
    saved: Saved,
    datapath: Box<dyn Datapath>,
    store: StateStore,
    identity: Identity,
) -> std::io::Result<(Control, Worker)> {
    let (jobs, queue) = mpsc::channel();
    let mut state = State {
        spd: saved.spd,
        generation: saved.generation,
        datapath,
        store,
        identity,
        started: Instant::now(),
        ike: None,
        demand_seen: std::collections::HashMap::new(),
    };
    let thread = std::thread::Builder::new()
        .name("xipsec-state".to_owned())
        .spawn(move || state.run(&queue))?;
    Ok((Control { jobs: jobs.clone() }, Worker { jobs, thread }))
}

impl Control {
    /// Answer one request.
    pub(crate) async fn handle(&self, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        if self
            .jobs
            .send(Job::Request(Box::new(request), reply))
            .is_err()
        {
            return shutting_down();
        }
        answer.await.unwrap_or_else(|_| shutting_down())
    }

    /// Install or remove a CHILD_SA's SAs (the IKE task's door to the state).
    ///
    /// # Errors
    /// Why the change was refused (nothing changed then).
    pub(crate) async fn ike(&self, job: super::ike::IkeJob) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Ike(job, reply)).is_err() {
            return Err("the daemon is shutting down".to_owned());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the daemon is shutting down".to_owned()))
    }

    /// The `on-demand` peers whose unbound outbound SPs counted packets since the last call:
    /// the datapath's signal that a flow wants an SA.
    pub(crate) async fn ike_demand(&self) -> Vec<String> {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::IkeDemand(reply)).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Let rekeyed CHILD_SAs on which ESP arrived carry their flows (see `ike`).
    pub(crate) fn ike_esp_seen(&self) {
        let _ = self.jobs.send(Job::IkeEspSeen);
    }

    /// Connect the IKE task: it gets the peers now and after every committed change.
    pub(crate) fn attach_ike(&self, link: super::ike::IkeLink) {
        let _ = self.jobs.send(Job::AttachIke(link));
    }
}

fn shutting_down() -> Response {
    Response::Error {
        message: "the daemon is shutting down; nothing changed".to_owned(),
    }
}

struct State {
    spd: Spd,
    /// The committed configuration generation (see the module docs).
    generation: u64,
    datapath: Box<dyn Datapath>,
    store: StateStore,
    identity: Identity,
    started: Instant,
    /// The IKE task, once attached.
    ike: Option<super::ike::IkeLink>,
    /// Per unbound SP of an `on-demand` peer, the packets it had counted when last asked.
    demand_seen: std::collections::HashMap<String, u64>,
}

/// An applied, not yet committed change: what it did and its log line.
struct Pending {
    reply: oneshot::Sender<Response>,
    outcome: Outcome,
    log: Box<dyn FnOnce() + Send>,
}

/// How long a commit's datapath sync and state write took.
struct Installed {
    sync: std::time::Duration,
    save: std::time::Duration,
}

/// Single changes committed together: the copy of the SPD they were applied to, in order.
#[derive(Default)]
struct Group {
    next: Option<Spd>,
    pending: Vec<Pending>,
}

impl State {
    fn run(&mut self, queue: &mpsc::Receiver<Job>) {
        let mut stopping = false;
        while !stopping {
            let Ok(first) = queue.recv() else { return };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let mut group = Group::default();
            for job in jobs {
                let (request, reply) = match job {
                    Job::Request(request, reply) => (request, reply),
                    Job::Stop => {
                        stopping = true;
                        continue;
                    }
                    Job::Ike(job, reply) => {
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.ike_job(job));
                        continue;
                    }
                    Job::AttachIke(link) => {
                        self.ike = Some(link);
                        self.tell_ike();
                        continue;
                    }
                    Job::IkeDemand(reply) => {
                        let counters = self.counters();
                        let _ = reply.send(super::ike::demanded(
                            &self.spd,
                            &counters,
                            &mut self.demand_seen,
                        ));
                        continue;
                    }
                    Job::IkeEspSeen => {
                        let seen = super::ike::waiting_with_esp(&self.spd, || self.counters());
                        if !seen.is_empty() {
                            self.commit(std::mem::take(&mut group));
                            let promote = super::ike::IkeJob::Promote { inbound: seen };
                            if let Err(e) = self.ike_job(promote) {
                                warn!(error = e, "ike: cannot move flows to a rekeyed child sa");
                            }
                        }
                        continue;
                    }
                };
                if stopping {
                    let _ = reply.send(shutting_down());
                    continue;
                }
                match *request {
                    Request::SaResetReplay { sa_name } => {
                        let _ = reply.send(self.reset_replay(sa_name.as_deref()));
                    }
                    Request::Batch(batch) => {
                        // Queued changes first, so the batch sees (and is checked against)
                        // every change acknowledged before it.
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.batch(&batch));
                    }
                    Request::Apply(apply) => {
                        // Like a batch: diffed against every change acknowledged before it,
                        // and nothing runs between the diff and its commit.
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.apply(&apply));
                    }
                    Request::IkeSaList => match &self.ike {
                        Some(link) => link.list(reply),
                        None => {
                            let _ = reply.send(Response::IkeSaList(Vec::new()));
                        }
                    },
                    Request::IkeSaRekey { peer_name, ike } => {
                        super::ike::rekey(&self.spd, self.ike.as_ref(), peer_name, ike, reply);
                    }
                    request => match self.read(request) {
                        Ok(response) => {
                            let _ = reply.send(response);
                        }
                        Err(change) => self.stage(&mut group, &change, reply),
                    },
                }
            }
            self.commit(group);
        }
    }

    /// Apply one single change to the group's copy of the SPD; answered at its commit.
    fn stage(&self, group: &mut Group, change: &Change, reply: oneshot::Sender<Response>) {
        let spd = group.next.get_or_insert_with(|| self.spd.clone());
        match apply(spd, change) {
            Ok((outcome, log)) => group.pending.push(Pending {
                reply,
                outcome,
                log,
            }),
            Err(e) => {
                let _ = reply.send(Response::Error {
                    message: e.to_string(),
                });
            }
        }
    }

    /// Check `batch` as a whole on a copy and commit it as one change; see the module docs.
    fn batch(&mut self, batch: &Batch) -> Response {
        let error = |message: String| Response::Error { message };
        if let Some(expected) = batch.expect_generation
            && expected != self.generation
        {
            return error(format!(
                "the configuration is at generation {}, not {expected}: it changed since the \
                 batch was computed; nothing changed (recompute it against generation {})",
                self.generation, self.generation
            ));
        }
        let started = Instant::now();
        let (next, summary) = match batch::apply(&self.spd, &batch.items) {
            Ok(applied) => applied,
            Err(e) => return error(format!("{e}; nothing changed")),
        };
        let items = batch.items.len();
        if items == 0 {
            return Response::BatchApplied {
                generation: self.generation,
                added: 0,
                removed: 0,
            };
        }
        let checked = started.elapsed();
        let generation = self.generation + 1;
        let took = match self.install(&next, generation) {
            Ok(took) => took,
            Err(message) => return error(message),
        };
        self.spd = next;
        self.generation = generation;
        self.tell_ike();
        info!(
            items,
            added = summary.added,
            removed = summary.removed,
            generation,
            check_ms = checked.as_millis(),
            sync_ms = took.sync.as_millis(),
            save_ms = took.save.as_millis(),
            total_ms = started.elapsed().as_millis(),
            "batch applied"
        );
        Response::BatchApplied {
            generation,
            added: summary.added,
            removed: summary.removed,
        }
    }

    /// `apply`: the difference from the committed configuration, committed as one batch unless
    /// this is a dry run or there is none (see `apply`).
    fn apply(&mut self, request: &super::protocol::Apply) -> Response {
        if let Some(expected) = request.expect_generation
            && expected != self.generation
        {
            return Response::Error {
                message: format!(
                    "the configuration is at generation {}, not {expected}: it changed since; \
                     nothing changed (run apply --dry-run again to see the difference now)",
                    self.generation
                ),
            };
        }
        let plan = match super::apply::plan(&self.spd, &request.items) {
            Ok(plan) => plan,
            Err(e) => {
                return Response::Error {
                    message: format!("{e}; nothing changed"),
                };
            }
        };
        let mut report = super::protocol::ApplyReport {
            dry_run: request.dry_run,
            generation: self.generation,
            differences: plan.differences,
        };
        if request.dry_run || plan.items.is_empty() {
            return Response::Applied(report);
        }
        let batch = Batch {
            expect_generation: Some(self.generation),
            items: plan.items,
        };
        match self.batch(&batch) {
            Response::BatchApplied { generation, .. } => {
                report.generation = generation;
                Response::Applied(report)
            }
            other => other,
        }
    }

    /// `sa reset-replay`: the SA must exist in the committed state; the engine empties its
    /// window and forgets its persisted ceiling. Nothing in the SPD changes.
    fn reset_replay(&mut self, sa_name: Option<&str>) -> Response {
        let error = |message: String| Response::Error { message };
        let Some(name) = sa_name else {
            return error("sa reset-replay needs --sa-name".to_owned());
        };
        let Some(sa) = self.spd.sas().iter().find(|sa| sa.name == name) else {
            return error(format!("no sa named {name:?}; nothing changed"));
        };
        let spi = sa.spi;
        match self.datapath.reset_replay(spi) {
            Ok(true) => {
                warn!(
                    sa = %name, spi = format_args!("{spi:#x}"),
                    "replay window reset by the operator: packets of this sa captured before are acceptable again"
                );
                Response::ReplayReset {
                    name: name.to_owned(),
                }
            }
            Ok(false) => error(format!(
                "the esp engine holds no sa named {name:?}; nothing changed"
            )),
            Err(e) => {
                error!(error = %Chain(&e), sa = %name, "cannot reset the replay window");
                error(format!(
                    "cannot reset the replay window of {name}, nothing changed: {}",
                    Chain(&e)
                ))
            }
        }
    }

    /// Answer a read from the committed state; a change comes back unanswered.
    fn read(&self, request: Request) -> Result<Response, Box<Change>> {
        Ok(match request {
            Request::SaList => Response::SaList(sa_entries(&self.spd, &self.counters())),
            Request::SpList => Response::SpList(sp_entries(&self.spd, &self.counters())),
            Request::Stats => Response::Stats(StatsReport {
                reasons: self.counters().reasons,
            }),
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Metrics { max_sps } => Response::Metrics(self.metrics(max_sps)),
            Request::SaAdd(args) => return Err(Box::new(Change::SaAdd(args))),
            Request::SaRemove(args) => return Err(Box::new(Change::SaRemove(args))),
            Request::SpAdd(args) => return Err(Box::new(Change::SpAdd(args))),
            Request::SpRemove(args) => return Err(Box::new(Change::SpRemove(args))),
            Request::PeerAdd(args) => return Err(Box::new(Change::PeerAdd(args))),
            Request::PeerRemove(args) => return Err(Box::new(Change::PeerRemove(args))),
            Request::SpAddIke(args) => return Err(Box::new(Change::SpAddIke(args))),
            Request::PeerList => Response::PeerList(super::ike::peer_entries(&self.spd)),
            Request::IkeSaList => Response::IkeSaList(Vec::new()),
            Request::IkeSaRekey { .. } => Response::Error {
                message: "ike sa rekey is answered by the ike task; nothing changed".to_owned(),
            },
            Request::Export { with_keys } => Response::Configuration(super::apply::configuration(
                &self.spd,
                self.generation,
                with_keys,
            )),
            Request::SaResetReplay { .. } | Request::Batch(_) | Request::Apply(_) => {
                Response::Error {
                    message: "internal error: a change reached the read path".to_owned(),
                }
            }
            Request::Explain(args) => {
                match super::explain::explain(&self.spd, self.generation, &*self.datapath, &args) {
                    Ok(report) => Response::Explained(report),
                    Err(message) => Response::Error { message },
                }
            }
        })
    }

    /// `status`: the daemon's identity, the committed state's size, and what the kernel says
    /// about the attachments and the engine (see `status`).
    fn status(&self) -> StatusReport {
        let mut report = StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            socket: self.identity.socket.clone(),
            state_file: self.store.path().display().to_string(),
            datapath: self.identity.datapath.clone(),
            interfaces: self.identity.interfaces.clone(),
            xdp_mode: self.identity.xdp_mode.clone(),
            pin_dir: self.identity.pin_dir.clone(),
            sas: self.spd.sas().len() as u64,
            sps: self.spd.sps().len() as u64,
            uptime_seconds: self.started.elapsed().as_secs(),
            engine: match crate::engine::death() {
                Some(death) => format!("dead: {death}"),
                None if self.identity.datapath == "none" => "none".to_owned(),
                None => "running".to_owned(),
            },
            generation: self.generation,
            ..StatusReport::default()
        };
        super::status::fill(&mut report, &self.datapath.inspect());
        report
    }

    /// What `GET /metrics` serves: one counter snapshot over the committed state.
    fn metrics(&self, max_sps: u64) -> MetricsReport {
        let counters = self.counters();
        super::metrics::report(
            &self.spd,
            sa_entries(&self.spd, &counters),
            sp_entries(&self.spd, &counters),
            super::metrics::Totals {
                max_sps,
                reasons: counters.reasons,
                verdicts: self.datapath.inspect().verdicts,
                generation: self.generation,
                uptime_seconds: self.started.elapsed().as_secs(),
            },
        )
    }

    /// Counters for a listing. A datapath that cannot report them must not hide the policy
    /// itself, so the listing shows zeros and the failure goes to the log.
    fn counters(&self) -> Counters {
        self.datapath.counters().unwrap_or_else(|e| {
            warn!(error = %Chain(&e), "cannot read counters");
            Counters::default()
        })
    }

    /// Commit a group of single changes: sync, persist and swap in its SPD, then answer each
    /// change with the generation it created; see the module docs.
    fn commit(&mut self, group: Group) {
        let Some(next) = group.next.filter(|_| !group.pending.is_empty()) else {
            return;
        };
        let base = self.generation;
        let last = base + group.pending.len() as u64;
        if let Err(message) = self.install(&next, last).map(drop) {
            for p in group.pending {
                let _ = p.reply.send(Response::Error {
                    message: message.clone(),
                });
            }
            return;
        }
        self.spd = next;
        self.generation = last;
        self.tell_ike();
        for (p, generation) in group.pending.into_iter().zip(base + 1..) {
            (p.log)();
            let _ = p.reply.send(match p.outcome {
                Outcome::Added(name) => Response::Added { name, generation },
                Outcome::Removed(names) => Response::Removed { names, generation },
            });
        }
    }

    /// Make the datapath, then the state file, hold `next` at `generation`: one sync (one
    /// epoch flip) and one atomic write; how long each took. On failure the datapath is synced
    /// back to the committed state and the error message (ending in "nothing changed") comes
    /// back.
    fn install(&mut self, next: &Spd, generation: u64) -> Result<Installed, String> {
        let started = Instant::now();
        if let Err(e) = self.datapath.sync(next) {
            error!(error = %Chain(&e), "the datapath refused the change; restoring");
            return Err(format!(
                "the datapath refused the change, nothing changed: {}{}",
                Chain(&e),
                self.restore()
            ));
        }
        let synced = Instant::now();
        if let Err(e) = self.store.save(next, generation) {
            error!(error = %Chain(&e), "cannot persist the change; restoring");
            return Err(format!(
                "cannot save the state, nothing changed: {}{}",
                Chain(&e),
                self.restore()
            ));
        }
        Ok(Installed {
            sync: synced - started,
            save: synced.elapsed(),
        })
    }

    /// Tell the IKE task what the committed state asks of it (it ignores what did not change).
    fn tell_ike(&self) {
        if let Some(link) = &self.ike {
            link.configure(&self.spd);
        }
    }

    /// A CHILD_SA's SAs installed or removed: datapath only, as `ike` SAs never reach the
    /// state file; the configuration generation does not move.
    fn ike_job(&mut self, job: super::ike::IkeJob) -> Result<(), String> {
        let mut next = self.spd.clone();
        let log = super::ike::apply(&mut next, job)?;
        if let Err(e) = self.datapath.sync(&next) {
            error!(error = %Chain(&e), "the datapath refused an ike sa change; restoring");
            return Err(format!(
                "the datapath refused the change: {}{}",
                Chain(&e),
                self.restore()
            ));
        }
        self.spd = next;
        log();
        Ok(())
    }

    /// Sync the datapath back to the committed state; text to append to the error if that
    /// fails too.
    fn restore(&mut self) -> String {
        match self.datapath.sync(&self.spd) {
            Ok(()) => String::new(),
            Err(e) => {
                error!(error = %Chain(&e), "cannot restore the datapath to the saved state");
                format!(
                    " (and restoring the previous datapath state failed: {})",
                    Chain(&e)
                )
            }
        }
    }
}

/// The CLI's spelling of a model enum (its serde name), for log lines.
fn spelled<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

type Applied = (Outcome, Box<dyn FnOnce() + Send>);

/// Apply one change to `spd` (unchanged on error); what it did and its log line.
fn apply(spd: &mut Spd, change: &Change) -> Result<Applied, ModelError> {
    let outcome = batch::change(spd, change)?;
    let log: Box<dyn FnOnce() + Send> = match &outcome {
        Outcome::Added(name) => {
            let name = name.clone();
            if let Some(sa) = spd.sa(&name).filter(|_| matches!(change, Change::SaAdd(_))) {
                let (spi, mode) = (sa.spi, sa.mode);
                Box::new(
                    move || info!(sa = %name, spi = format_args!("{spi:#x}"), ?mode, "sa added"),
                )
            } else if let Some(sp) = spd.sp(&name) {
                let (direction, action) = (spelled(&sp.direction), spelled(&sp.action));
                let sa = sp.sa_name.clone();
                Box::new(move || {
                    info!(
                        sp = %name, direction, action, sa = sa.as_deref().unwrap_or("-"),
                        "sp added"
                    );
                })
            } else {
                Box::new(|| {})
            }
        }
        Outcome::Removed(names) => {
            let names = names.clone();
            if matches!(change, Change::SaRemove(_)) {
                Box::new(move || info!(sas = ?names, "sa removed"))
            } else {
                Box::new(move || info!(sps = ?names, "sp removed"))
            }
        }
    };
    Ok((outcome, log))
}

fn sa_entries(spd: &Spd, counters: &Counters) -> Vec<SaEntry> {
    let mut sas: Vec<&Sa> = spd.sas().iter().collect();
    sas.sort_by(|a, b| a.name.cmp(&b.name));
    sas.into_iter()
        .map(|sa| {
            let count = counters.sa.get(&sa.id).copied().unwrap_or_default();
            let mut in_use_by: Vec<String> = spd
                .sa_users(&sa.name)
                .into_iter()
                .map(|sp| sp.name.clone())
                .collect();
            in_use_by.sort();
            SaEntry {
                name: sa.name.clone(),
                source: sa.source,
                destination: sa.destination,
                mode: sa.mode,
                spi: sa.spi,
                encryption_algorithm: sa.encryption,
                integrity_algorithm: sa.integrity,
                owner: if spd.ike_owner(&sa.name).is_some() {
                    "ike"
                } else {
                    "user"
                }
                .to_owned(),
                in_use_by,
                packets: count.packets,
                bytes: count.bytes,
                auth_failures: count.auth_failures,
                replay_drops: count.replay_drops,
                errors: count.errors,
                udp_encap: sa.udp_encap,
            }
        })
        .collect()
}

pub(super) fn sp_entries(spd: &Spd, counters: &Counters) -> Vec<SpEntry> {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::daemon::port::PortError;
    use crate::daemon::protocol::BatchItem;
    use crate::datapath::DatapathError;
    use crate::model::SpRemoveArgs;

    /// A datapath that records the number of SPs of every sync, and refuses one when told.
    #[derive(Clone, Default)]
    struct Recording {
        syncs: Arc<Mutex<Vec<usize>>>,
        refuse: Arc<AtomicBool>,
    }

    impl Datapath for Recording {
        fn sync(&mut self, spd: &Spd) -> Result<(), PortError> {
            if self.refuse.swap(false, Ordering::SeqCst) {
                return Err(DatapathError::NoSuchInterface("refused".into()).into());
            }
            self.syncs.lock().expect("sync log").push(spd.sps().len());
            Ok(())
        }
        fn counters(&self) -> Result<Counters, PortError> {
            Ok(Counters::default())
        }
    }

    struct Harness {
        control: Control,
        worker: Option<Worker>,
        datapath: Recording,
        dir: tempfile::TempDir,
    }

    impl Harness {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("creating a temporary directory");
            let (store, saved) = StateStore::open(dir.path()).expect("opening the state");
            let datapath = Recording::default();
            let identity = Identity {
                socket: String::new(),
                datapath: "none".into(),
                interfaces: Vec::new(),
                xdp_mode: "auto".into(),
                pin_dir: String::new(),
            };
            let (control, worker) = start(saved, Box::new(datapath.clone()), store, identity)
                .expect("starting the worker");
            Self {
                control,
                worker: Some(worker),
                datapath,
                dir,
            }
        }

        fn ask(&self, request: Request) -> Response {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            runtime.block_on(self.control.handle(request))
        }

        fn saved(&self) -> Saved {
            match std::fs::read(self.dir.path().join("state.json")) {
                Ok(bytes) => super::super::state::parse_saved(&bytes).expect("a valid state file"),
                Err(_) => Saved::default(),
            }
        }

        fn syncs(&self) -> Vec<usize> {
            self.datapath.syncs.lock().expect("sync log").clone()
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            if let Some(worker) = self.worker.take() {
                worker.stop();
            }
        }
    }

    fn sp(name: &str) -> Change {
        let source = format!(
            "fd00:{:x}::/64",
            name.len() * 7 + usize::from(name.as_bytes()[0])
        );
        Change::SpAdd(batch::inbound_discard(name, &source))
    }

    fn remove(name: &str) -> Change {
        Change::SpRemove(SpRemoveArgs {
            sp_name: Some(name.into()),
            remove_all: false,
        })
    }

    fn batch(expect_generation: Option<u64>, changes: Vec<Change>) -> Request {
        Request::Batch(Batch {
            expect_generation,
            items: changes
                .into_iter()
                .map(|change| BatchItem { line: None, change })
                .collect(),
        })
    }

    fn message(response: Response) -> String {
        match response {
            Response::Error { message } => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_batch_is_one_sync_one_write_and_one_generation() {
        let h = Harness::new();
        let answer = h.ask(batch(
            Some(0),
            vec![sp("a"), sp("bb"), remove("a"), sp("ccc")],
        ));
        assert!(
            matches!(
                answer,
                Response::BatchApplied {
                    generation: 1,
                    added: 3,
                    removed: 1
                }
            ),
            "{answer:?}"
        );
        assert_eq!(h.syncs(), vec![2], "one sync holding the whole batch");
        let saved = h.saved();
        assert_eq!(saved.generation, 1);
        assert_eq!(saved.spd.sps().len(), 2);
        // Single changes each get their own generation; status shows the last.
        let added = h.ask(Request::SpAdd(match sp("dddd") {
            Change::SpAdd(a) => a,
            _ => unreachable!(),
        }));
        assert!(
            matches!(added, Response::Added { generation: 2, .. }),
            "{added:?}"
        );
        let removed = h.ask(Request::SpRemove(SpRemoveArgs {
            sp_name: Some("dddd".into()),
            remove_all: false,
        }));
        assert!(
            matches!(removed, Response::Removed { generation: 3, .. }),
            "{removed:?}"
        );
        let Response::Status(status) = h.ask(Request::Status) else {
            panic!("status");
        };
        assert_eq!(status.generation, 3);
        assert_eq!(h.saved().generation, 3);
    }

    #[test]
    fn a_refused_item_anywhere_changes_nothing() {
        let h = Harness::new();
        h.ask(batch(None, vec![sp("keep")]));
        let before = (h.saved(), h.syncs());
        for bad in 0..3 {
            let mut changes = vec![sp("a"), sp("bb"), sp("ccc")];
            changes[bad] = remove("nope");
            let error = message(h.ask(batch(None, changes)));
            assert_eq!(
                error,
                format!(
                    "item {}: --sp-name: no sp named 'nope'; see sp list; nothing changed",
                    bad + 1
                )
            );
            assert_eq!((h.saved(), h.syncs()), before, "bad item {bad}");
        }
        // The same name twice: the second add sees the first.
        let error = message(h.ask(batch(None, vec![sp("a"), sp("a")])));
        assert!(
            error.starts_with("item 2: --sp-name: sp 'a' already exists"),
            "{error}"
        );
        assert_eq!((h.saved(), h.syncs()), before);
    }

    #[test]
    fn a_batch_computed_against_another_generation_is_refused() {
        let h = Harness::new();
        h.ask(batch(None, vec![sp("a")]));
        let before = h.saved();
        let error = message(h.ask(batch(Some(0), vec![sp("bb")])));
        assert_eq!(
            error,
            "the configuration is at generation 1, not 0: it changed since the batch was \
             computed; nothing changed (recompute it against generation 1)"
        );
        assert_eq!(h.saved(), before);
        assert!(matches!(
            h.ask(batch(Some(1), vec![sp("bb")])),
            Response::BatchApplied { generation: 2, .. }
        ));
        // An empty batch changes nothing, not even the generation, and syncs nothing.
        let syncs = h.syncs();
        assert!(matches!(
            h.ask(batch(Some(2), Vec::new())),
            Response::BatchApplied {
                generation: 2,
                added: 0,
                removed: 0
            }
        ));
        assert_eq!(h.syncs(), syncs);
    }

    #[test]
    fn a_datapath_refusal_leaves_the_committed_state() {
        let h = Harness::new();
        h.ask(batch(None, vec![sp("a")]));
        let before = h.saved();
        h.datapath.refuse.store(true, Ordering::SeqCst);
        let error = message(h.ask(batch(None, vec![sp("bb"), sp("ccc")])));
        assert!(
            error.starts_with("the datapath refused the change, nothing changed"),
            "{error}"
        );
        assert_eq!(h.saved(), before);
        // The refused sync was followed by a restore to the committed SPD (one SP).
        assert_eq!(h.syncs().last(), Some(&1));
        let Response::Status(status) = h.ask(Request::Status) else {
            panic!("status");
        };
        assert_eq!((status.sps, status.generation), (1, 1));
    }
}

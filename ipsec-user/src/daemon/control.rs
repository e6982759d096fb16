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

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::port::{Counters, Datapath};
use super::protocol::{Request, Response, SaEntry, SpEntry, StatsReport, StatusReport};
use super::state::StateStore;
use crate::model::Chain;
use crate::model::{ModelError, Sa, SaAddArgs, SaRemoveArgs, Sp, SpAddArgs, SpRemoveArgs, Spd};

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

/// Start the worker that owns `spd`, `datapath` and `store`.
pub(crate) fn start(
    spd: Spd,
    datapath: Box<dyn Datapath>,
    store: StateStore,
    identity: Identity,
) -> std::io::Result<(Control, Worker)> {
    let (jobs, queue) = mpsc::channel();
    let mut state = State {
        spd,
        datapath,
        store,
        identity,
        started: Instant::now(),
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
}

fn shutting_down() -> Response {
    Response::Error {
        message: "the daemon is shutting down; nothing changed".to_owned(),
    }
}

struct State {
    spd: Spd,
    datapath: Box<dyn Datapath>,
    store: StateStore,
    identity: Identity,
    started: Instant,
}

/// An applied, not yet committed change: its answer and its log line.
struct Pending {
    reply: oneshot::Sender<Response>,
    response: Response,
    log: Box<dyn FnOnce() + Send>,
}

impl State {
    fn run(&mut self, queue: &mpsc::Receiver<Job>) {
        let mut stopping = false;
        while !stopping {
            let Ok(first) = queue.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut next: Option<Spd> = None;
            let mut pending = Vec::new();
            for job in batch {
                let (request, reply) = match job {
                    Job::Request(request, reply) => (request, reply),
                    Job::Stop => {
                        stopping = true;
                        continue;
                    }
                };
                if stopping {
                    let _ = reply.send(shutting_down());
                    continue;
                }
                if let Request::SaResetReplay { sa_name } = *request {
                    let _ = reply.send(self.reset_replay(sa_name.as_deref()));
                    continue;
                }
                let request = match self.read(*request) {
                    Ok(response) => {
                        let _ = reply.send(response);
                        continue;
                    }
                    Err(change) => change,
                };
                let spd = next.get_or_insert_with(|| self.spd.clone());
                match apply(spd, *request) {
                    Ok((response, log)) => pending.push(Pending {
                        reply,
                        response,
                        log,
                    }),
                    Err(e) => {
                        let _ = reply.send(Response::Error {
                            message: e.to_string(),
                        });
                    }
                }
            }
            if let Some(next) = next.filter(|_| !pending.is_empty()) {
                self.commit(next, pending);
            }
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
            Request::Status => Response::Status(StatusReport {
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
            }),
            Request::SaAdd(args) => return Err(Box::new(Change::SaAdd(args))),
            Request::SaRemove(args) => return Err(Box::new(Change::SaRemove(args))),
            Request::SpAdd(args) => return Err(Box::new(Change::SpAdd(args))),
            Request::SpRemove(args) => return Err(Box::new(Change::SpRemove(args))),
            Request::SaResetReplay { .. } => Response::Error {
                message: "internal error: reset-replay reached the read path".to_owned(),
            },
        })
    }

    /// Counters for a listing. A datapath that cannot report them must not hide the policy
    /// itself, so the listing shows zeros and the failure goes to the log.
    fn counters(&self) -> Counters {
        self.datapath.counters().unwrap_or_else(|e| {
            warn!(error = %Chain(&e), "cannot read counters");
            Counters::default()
        })
    }

    /// Sync, persist and swap in `next`, then answer `pending`; see the module docs.
    fn commit(&mut self, next: Spd, pending: Vec<Pending>) {
        let failure = if let Err(e) = self.datapath.sync(&next) {
            error!(error = %Chain(&e), "the datapath refused the change; restoring");
            Some(format!(
                "the datapath refused the change, nothing changed: {}{}",
                Chain(&e),
                self.restore()
            ))
        } else if let Err(e) = self.store.save(&next) {
            error!(error = %Chain(&e), "cannot persist the change; restoring");
            Some(format!(
                "cannot save the state, nothing changed: {}{}",
                Chain(&e),
                self.restore()
            ))
        } else {
            None
        };
        if let Some(message) = failure {
            for p in pending {
                let _ = p.reply.send(Response::Error {
                    message: message.clone(),
                });
            }
            return;
        }
        self.spd = next;
        for p in pending {
            (p.log)();
            let _ = p.reply.send(p.response);
        }
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

/// The requests that change the state.
enum Change {
    SaAdd(SaAddArgs),
    SaRemove(SaRemoveArgs),
    SpAdd(SpAddArgs),
    SpRemove(SpRemoveArgs),
}

type Applied = (Response, Box<dyn FnOnce() + Send>);

/// Apply one change to `spd` (unchanged on error); the answer and log line for its commit.
fn apply(spd: &mut Spd, change: Change) -> Result<Applied, ModelError> {
    Ok(match change {
        Change::SaAdd(args) => {
            let sa = spd.add_sa(&args)?;
            let (spi, mode) = (sa.spi, sa.mode);
            added(sa.name.clone(), move |name| {
                info!(sa = %name, spi = format_args!("{spi:#x}"), ?mode, "sa added");
            })
        }
        Change::SaRemove(args) => {
            let sas = spd.remove_sa(&args)?.into_iter().map(|sa| sa.name);
            removed(sas.collect(), |sas| info!(sas = ?sas, "sa removed"))
        }
        Change::SpAdd(args) => {
            let sp = spd.add_sp(&args)?;
            let (direction, action, sa) = (sp.direction, sp.action, sp.sa_name.clone());
            added(sp.name.clone(), move |name| {
                info!(
                    sp = %name, direction = spelled(&direction), action = spelled(&action),
                    sa = sa.as_deref().unwrap_or("-"), "sp added"
                );
            })
        }
        Change::SpRemove(args) => {
            let sps = spd.remove_sp(&args)?.into_iter().map(|sp| sp.name);
            removed(sps.collect(), |sps| info!(sps = ?sps, "sp removed"))
        }
    })
}

/// The answer to adding `name`, and its log line (`log(name)`).
fn added(name: String, log: impl FnOnce(&str) + Send + 'static) -> Applied {
    let logged = name.clone();
    (Response::Added { name }, Box::new(move || log(&logged)))
}

/// The answer to removing `names`, and its log line (`log(names)`).
fn removed(names: Vec<String>, log: fn(&[String])) -> Applied {
    let logged = names.clone();
    (Response::Removed { names }, Box::new(move || log(&logged)))
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

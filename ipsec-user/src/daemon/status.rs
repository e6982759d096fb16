//! What `xipsec status` says about the interfaces and the ESP engine, asked from the kernel
//! each time (see `datapath::inspect`), and how it lands in the [`StatusReport`].
//!
//! Contract: per interface, in `--interface` order, the XDP mode in effect (`IFLA_XDP`), the
//! XDP program id, the TC egress link and since when the programs are attached; for the engine,
//! the names of the daemon's running threads (`/proc/self/task/*/comm`, as the kernel shows
//! them: at most 15 characters), its TUN device, its AF_XDP sockets and its last fatal error. A
//! question that fails shows as `error: ...` in that interface's cell; it never fails `status`.

use std::path::Path;
use std::time::SystemTime;

use super::protocol::StatusReport;
use crate::datapath::inspect::{self, PinnedLinkState, XdpState};

/// What a datapath reports about itself for `status` and the metrics.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    /// One per attached interface, in `--interface` order.
    pub interfaces: Vec<InterfaceState>,
    /// The ESP engine, if there is one.
    pub engine: Option<EngineState>,
    /// Every kernel counter by name, verdicts (passes included) and events.
    pub verdicts: Vec<(String, u64)>,
}

/// One interface, as the kernel reports it.
#[derive(Clone, Debug)]
pub struct InterfaceState {
    pub name: String,
    pub xdp: Result<XdpState, String>,
    pub xdp_link: Result<Option<PinnedLinkState>, String>,
    pub tc_link: Result<Option<PinnedLinkState>, String>,
}

/// The ESP engine's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineState {
    /// The TUN device and its ifindex.
    pub tun: (String, u32),
    /// AF_XDP sockets: (interface, queue).
    pub xsk: Vec<(String, u32)>,
}

/// Ask the kernel about each of `interfaces`, whose links are pinned under `pin_dir`.
pub fn inspect_interfaces(pin_dir: &Path, interfaces: &[String]) -> Vec<InterfaceState> {
    let text = |e: inspect::InspectError| crate::model::Chain(&e).to_string();
    interfaces
        .iter()
        .map(|name| InterfaceState {
            name: name.clone(),
            xdp: inspect::xdp_state(name).map_err(text),
            xdp_link: inspect::pinned_link(&inspect::xdp_link_pin(pin_dir, name)).map_err(text),
            tc_link: inspect::pinned_link(&inspect::tc_link_pin(pin_dir, name)).map_err(text),
        })
        .collect()
}

/// Names of this process's threads that belong to xipsec (`xipsec-*`), as the kernel lists
/// them.
pub fn running_threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut names: Vec<String> = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_owned())
        .filter(|comm| comm.starts_with("xipsec-"))
        .collect();
    names.sort();
    names
}

/// A time as RFC 3339 UTC, to the second.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Fill the interface and engine fields of `report` from `inspection`.
pub fn fill(report: &mut StatusReport, inspection: &Inspection) {
    let error = |e: &String| format!("error: {e}");
    for interface in &inspection.interfaces {
        let (mode, program) = match &interface.xdp {
            Ok(xdp) => (xdp.mode.clone(), xdp.program_id.to_string()),
            Err(e) => (error(e), "0".to_owned()),
        };
        report.xdp_in_effect.push(mode);
        report.xdp_program_ids.push(program);
        report.tc_attachment.push(match &interface.tc_link {
            Ok(Some(link)) => format!(
                "{} egress program {} link {}",
                link.kind, link.program_id, link.link_id
            ),
            Ok(None) => "none".to_owned(),
            Err(e) => error(e),
        });
        report.attached_since.push(match &interface.xdp_link {
            Ok(Some(PinnedLinkState {
                since: Some(since), ..
            })) => rfc3339(*since),
            Ok(_) => "-".to_owned(),
            Err(e) => error(e),
        });
    }
    report.engine_threads = running_threads();
    if let Some(engine) = &inspection.engine {
        report.engine_tun = format!("{} ifindex {}", engine.tun.0, engine.tun.1);
        report.engine_xsk = engine
            .xsk
            .iter()
            .map(|(interface, queue)| format!("{interface} queue {queue}"))
            .collect();
    }
    report.engine_last_error = crate::engine::death();
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn report() -> StatusReport {
        StatusReport {
            interfaces: vec!["a0".into(), "b0".into()],
            ..StatusReport::default()
        }
    }

    #[test]
    fn each_interface_gets_one_cell_per_field_in_order() {
        let link = |kind: &str, since| PinnedLinkState {
            kind: kind.into(),
            link_id: 7,
            program_id: 9,
            since,
        };
        let inspection = Inspection {
            interfaces: vec![
                InterfaceState {
                    name: "a0".into(),
                    xdp: Ok(XdpState {
                        mode: "generic".into(),
                        program_id: 9,
                    }),
                    xdp_link: Ok(Some(link(
                        "xdp",
                        Some(UNIX_EPOCH + Duration::from_hours(500_000)),
                    ))),
                    tc_link: Ok(Some(link("tcx", None))),
                },
                InterfaceState {
                    name: "b0".into(),
                    xdp: Err("no such interface: b0".into()),
                    xdp_link: Ok(None),
                    tc_link: Ok(None),
                },
            ],
            engine: Some(EngineState {
                tun: ("xipsec0".into(), 5),
                xsk: vec![("a0".into(), 0), ("a0".into(), 1)],
            }),
            verdicts: Vec::new(),
        };
        let mut status = report();
        fill(&mut status, &inspection);
        assert_eq!(
            status.xdp_in_effect,
            ["generic", "error: no such interface: b0"]
        );
        assert_eq!(status.xdp_program_ids, ["9", "0"]);
        assert_eq!(
            status.tc_attachment,
            ["tcx egress program 9 link 7", "none"]
        );
        assert_eq!(status.attached_since, ["2027-01-15T08:00:00Z", "-"]);
        assert_eq!(status.engine_tun, "xipsec0 ifindex 5");
        assert_eq!(status.engine_xsk, ["a0 queue 0", "a0 queue 1"]);
    }

    #[test]
    fn the_threads_are_the_kernels_names() {
        let _worker = std::thread::Builder::new()
            .name("xipsec-test-thread-long-name".into())
            .spawn(|| std::thread::sleep(Duration::from_secs(2)))
            .expect("starting a thread");
        std::thread::sleep(Duration::from_millis(50));
        // The kernel keeps 15 bytes of a thread's name.
        assert!(
            running_threads().contains(&"xipsec-test-thr".to_owned()),
            "{:?}",
            running_threads()
        );
    }
}

//! `xipsec daemon --metrics-listen ADDR:PORT`: `GET /metrics` in the Prometheus text
//! exposition format 0.0.4.
//!
//! Contract:
//! - Off by default. A non-loopback address is refused unless `--metrics-allow-remote`
//!   ([`check_listen`]): the endpoint has no authentication, and SA names, SPIs and traffic
//!   volumes are worth protecting.
//! - One scrape is one `Request::Metrics` to the state worker: the committed state and one
//!   counter snapshot, the same the `sa list`, `sp list` and `stats` answers are built from, so a
//!   scrape equals those commands taken at the same moment. Keys never appear (listings do not
//!   carry them).
//! - Per-SP series only for the first `--metrics-max-sps` SPs in creation order (a stable set,
//!   so series do not come and go as traffic shifts); the rest are summed into
//!   `xipsec_sp_other_packets_total`/`xipsec_sp_other_bytes_total`, and
//!   `xipsec_sp_series_omitted` says how many SPs that covers.
//! - The format is the `prometheus` crate's `TextEncoder`; every family has `# HELP`.
//! - The HTTP side is deliberately tiny: one request per connection, a head of at most
//!   [`MAX_HEAD`] bytes read within [`SCRAPE_TIMEOUT`], at most [`MAX_SCRAPERS`] at once;
//!   `GET /metrics` answers 200, another path 404, another method 405, anything else 400.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::warn;

use super::control::Control;
use super::protocol::{MetricsReport, Request, Response, SaEntry, SpEntry};
use crate::model::{Direction, Spd};

/// Default `--metrics-max-sps`.
pub const DEFAULT_MAX_SPS: u64 = 1_000;
/// Longest request head read, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a scraper has to send its request and read the answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more connections are closed unanswered.
pub const MAX_SCRAPERS: usize = 8;

/// Where and how much to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    pub max_sps: u64,
}

/// Why the metrics endpoint was not started.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "--metrics-listen: {0} is not a loopback address; the metrics endpoint has no \
         authentication, so it listens on 127.0.0.1 or [::1] unless --metrics-allow-remote is \
         given"
    )]
    NotLoopback(SocketAddr),
}

/// Refuse a non-loopback `listen` unless `allow_remote`.
pub fn check_listen(listen: SocketAddr, allow_remote: bool) -> Result<(), MetricsError> {
    let loopback = match listen.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    if loopback || allow_remote {
        Ok(())
    } else {
        Err(MetricsError::NotLoopback(listen))
    }
}

/// What [`report`] needs besides the listings.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub max_sps: u64,
    pub reasons: Vec<(String, u64)>,
    pub verdicts: Vec<(String, u64)>,
    pub generation: u64,
    pub uptime_seconds: u64,
}

/// Assemble a scrape from the listings (`sps` in creation order) and counters of one moment.
pub(crate) fn report(
    spd: &Spd,
    sas: Vec<SaEntry>,
    mut sps: Vec<SpEntry>,
    totals: Totals,
) -> MetricsReport {
    let sa_directions = sas
        .iter()
        .map(|sa| {
            let users = spd.sa_users(&sa.name);
            let has = |d: Direction| users.iter().any(|sp| sp.direction == d);
            let direction = match (has(Direction::In), has(Direction::Out)) {
                (true, true) => "both",
                (true, false) => "in",
                (false, true) => "out",
                (false, false) => "unused",
            };
            (sa.name.clone(), direction.to_owned())
        })
        .collect();
    let sp_count = sps.len() as u64;
    let keep = usize::try_from(totals.max_sps).unwrap_or(usize::MAX);
    let rest = sps.split_off(keep.min(sps.len()));
    MetricsReport {
        sas,
        sa_directions,
        sps,
        sp_count,
        sp_rest_packets: rest.iter().map(|sp| sp.packets).sum(),
        sp_rest_bytes: rest.iter().map(|sp| sp.bytes).sum(),
        reasons: totals.reasons,
        verdicts: totals.verdicts,
        generation: totals.generation,
        uptime_seconds: totals.uptime_seconds,
    }
}

/// The verdicts that come out of a policy lookup (flow cache or rules): what the flow cache's
/// hit ratio is taken over.
const POLICY_VERDICTS: [&str; 7] = [
    "pass_no_policy",
    "pass_policy_none",
    "drop_discard",
    "drop_ipsec_clear",
    "drop_ipsec_unavailable",
    "ipsec_to_engine",
    "drop_unknown_action",
];

/// Kernel events counted besides a verdict (`abi::Counter::is_event`).
const EVENTS: [&str; 2] = ["fragment_no_state", "flow_cache_hit"];

/// Builds one scrape's registry; any error is the crate refusing a name or label (a bug).
struct Families {
    registry: Registry,
}

impl Families {
    fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        let family = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(family.clone()))?;
        Ok(family)
    }

    fn counter(&self, name: &str, help: &str, value: u64) -> prometheus::Result<()> {
        let counter = IntCounter::new(name, help)?;
        counter.inc_by(value);
        self.registry.register(Box::new(counter))
    }

    fn gauge(&self, name: &str, help: &str, value: u64) -> prometheus::Result<()> {
        let gauge = IntGauge::new(name, help)?;
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        self.registry.register(Box::new(gauge))
    }
}

/// `report` in the text exposition format 0.0.4.
pub fn render(report: &MetricsReport) -> prometheus::Result<String> {
    let f = Families {
        registry: Registry::new(),
    };
    let info = IntGaugeVec::new(
        Opts::new("xipsec_build_info", "The daemon's version; always 1."),
        &["version"],
    )?;
    f.registry.register(Box::new(info.clone()))?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    f.gauge(
        "xipsec_config_generation",
        "Configuration generation: changes committed since the state was created (a batch counts as one).",
        report.generation,
    )?;
    f.gauge(
        "xipsec_uptime_seconds",
        "Seconds since the daemon started.",
        report.uptime_seconds,
    )?;
    f.gauge("xipsec_sas", "Number of SAs.", report.sas.len() as u64)?;
    f.gauge("xipsec_sps", "Number of SPs.", report.sp_count)?;

    let sa_labels = ["sa", "spi", "direction"];
    let sa = |name: &str, help: &str| f.counter_vec(name, help, &sa_labels);
    let sa_packets = sa(
        "xipsec_sa_packets_total",
        "Packets an SA protected or accepted (as sa list).",
    )?;
    let sa_bytes = sa(
        "xipsec_sa_bytes_total",
        "Plaintext IPv6 bytes an SA protected or accepted (as sa list).",
    )?;
    let sa_auth = sa(
        "xipsec_sa_auth_failures_total",
        "Inbound ESP of an SA whose ICV did not verify (RFC 4303 3.4.4).",
    )?;
    let sa_replay = sa(
        "xipsec_sa_replay_drops_total",
        "Inbound ESP of an SA refused by the anti-replay window (RFC 4303 3.4.3).",
    )?;
    let sa_errors = sa(
        "xipsec_sa_errors_total",
        "Other failures of an SA (bad padding, sequence number exhausted, ...).",
    )?;
    for entry in &report.sas {
        let direction = report
            .sa_directions
            .iter()
            .find(|(name, _)| *name == entry.name)
            .map_or("unused", |(_, d)| d.as_str());
        let spi = format!("{:#x}", entry.spi);
        let labels = [entry.name.as_str(), spi.as_str(), direction];
        sa_packets.with_label_values(&labels).inc_by(entry.packets);
        sa_bytes.with_label_values(&labels).inc_by(entry.bytes);
        sa_auth
            .with_label_values(&labels)
            .inc_by(entry.auth_failures);
        sa_replay
            .with_label_values(&labels)
            .inc_by(entry.replay_drops);
        sa_errors.with_label_values(&labels).inc_by(entry.errors);
    }

    let sp_labels = ["sp", "direction", "action"];
    let sp_packets = f.counter_vec(
        "xipsec_sp_packets_total",
        "Packets that matched an SP (as sp list), for the first --metrics-max-sps SPs in creation order.",
        &sp_labels,
    )?;
    let sp_bytes = f.counter_vec(
        "xipsec_sp_bytes_total",
        "Bytes of the packets that matched an SP (as sp list), for the first --metrics-max-sps SPs.",
        &sp_labels,
    )?;
    for entry in &report.sps {
        let direction = spelled(&entry.direction);
        let action = spelled(&entry.action);
        let labels = [entry.name.as_str(), direction.as_str(), action.as_str()];
        sp_packets.with_label_values(&labels).inc_by(entry.packets);
        sp_bytes.with_label_values(&labels).inc_by(entry.bytes);
    }
    f.counter(
        "xipsec_sp_other_packets_total",
        "Packets that matched the SPs past --metrics-max-sps, summed (may fall when SPs are removed).",
        report.sp_rest_packets,
    )?;
    f.counter(
        "xipsec_sp_other_bytes_total",
        "Bytes of the packets that matched the SPs past --metrics-max-sps, summed.",
        report.sp_rest_bytes,
    )?;
    f.gauge(
        "xipsec_sp_series_omitted",
        "SPs past --metrics-max-sps: no series of their own, summed into xipsec_sp_other_*.",
        report.sp_count - report.sps.len() as u64,
    )?;

    let drops = f.counter_vec(
        "xipsec_drops_total",
        "Packets the kernel datapath dropped, per reason (as xipsec stats).",
        &["reason"],
    )?;
    let events = f.counter_vec(
        "xipsec_datapath_events_total",
        "Events the kernel datapath counts besides a verdict (as xipsec stats).",
        &["event"],
    )?;
    let engine = f.counter_vec(
        "xipsec_engine_events_total",
        "The ESP engine's counters, per name (as xipsec stats; esp_* drops included).",
        &["counter"],
    )?;
    for (name, value) in &report.reasons {
        let family = if name.starts_with("drop_") {
            &drops
        } else if EVENTS.contains(&name.as_str()) {
            &events
        } else {
            &engine
        };
        family.with_label_values(&[name.as_str()]).inc_by(*value);
    }
    let verdicts = f.counter_vec(
        "xipsec_datapath_verdicts_total",
        "Every verdict of the kernel programs (passes included), per verdict.",
        &["verdict"],
    )?;
    for (name, value) in report
        .verdicts
        .iter()
        .filter(|(n, _)| !EVENTS.contains(&n.as_str()))
    {
        verdicts.with_label_values(&[name.as_str()]).inc_by(*value);
    }
    let count = |list: &[(String, u64)], name: &str| {
        list.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    };
    let hits = count(&report.reasons, "flow_cache_hit");
    f.counter(
        "xipsec_flow_cache_hits_total",
        "Policy verdicts the kernel took from its flow cache.",
        hits,
    )?;
    let looked_up: u64 = POLICY_VERDICTS
        .iter()
        .map(|v| count(&report.verdicts, v))
        .sum();
    f.counter(
        "xipsec_flow_cache_lookups_total",
        "Packets given a policy verdict (pass_no_policy, pass_policy_none, drop_discard, drop_ipsec_clear, drop_ipsec_unavailable, ipsec_to_engine, drop_unknown_action); later fragments take their datagram's verdict without a lookup.",
        looked_up,
    )?;
    let ratio = Gauge::new(
        "xipsec_flow_cache_hit_ratio",
        "xipsec_flow_cache_hits_total / xipsec_flow_cache_lookups_total since the programs were loaded (0 before the first lookup); rate() of the two gives the recent ratio.",
    )?;
    #[allow(
        clippy::cast_precision_loss,
        reason = "a ratio of two counters: 53 bits of precision are plenty"
    )]
    ratio.set(if looked_up == 0 {
        0.0
    } else {
        (hits as f64 / looked_up as f64).min(1.0)
    });
    f.registry.register(Box::new(ratio))?;

    let mut out = Vec::new();
    TextEncoder::new().encode(&f.registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// The CLI's spelling of a model enum (its serde name).
fn spelled<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// Serve `GET /metrics` on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    control: Control,
    max_sps: u64,
    shutdown: impl Future,
) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Past the limit the connection is closed unanswered: scrapers retry.
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
                    let control = control.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            SCRAPE_TIMEOUT,
                            answer(stream, &control, max_sps),
                        )
                        .await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// How a request head is answered.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Route a request head (everything up to the blank line).
fn route(head: &[u8]) -> Route {
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Route::BadRequest;
    };
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

/// Read one request head and answer it.
async fn answer(mut stream: TcpStream, control: &Control, max_sps: u64) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", b"").await;
        }
    }
    match route(&head) {
        Route::Metrics => match control.handle(Request::Metrics { max_sps }).await {
            Response::Metrics(report) => match render(&report) {
                Ok(body) => {
                    respond(
                        &mut stream,
                        "200 OK",
                        &format!("Content-Type: {}\r\n", prometheus::TEXT_FORMAT),
                        body.as_bytes(),
                    )
                    .await
                }
                Err(e) => {
                    warn!(error = %e, "metrics: cannot encode");
                    respond(&mut stream, "500 Internal Server Error", "", b"").await
                }
            },
            other => {
                warn!(answer = ?other, "metrics: the state worker did not answer");
                respond(&mut stream, "503 Service Unavailable", "", b"").await
            }
        },
        Route::NotFound => respond(&mut stream, "404 Not Found", "", b"").await,
        Route::MethodNotAllowed => {
            respond(&mut stream, "405 Method Not Allowed", "Allow: GET\r\n", b"").await
        }
        Route::BadRequest => respond(&mut stream, "400 Bad Request", "", b"").await,
    }
}

/// Write one response and close: `status` line, the extra `headers` (each ending in CRLF),
/// the body with its length and type.
async fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, EncryptionAlgorithm, IntegrityAlgorithm, Mode, UpperLayerProtocol};

    #[test]
    fn only_loopback_is_served_unless_allowed() {
        for ok in [
            "127.0.0.1:9",
            "[::1]:9",
            "127.8.9.10:9",
            "[::ffff:127.0.0.1]:9",
        ] {
            check_listen(ok.parse().expect("an address"), false).expect(ok);
        }
        for remote in ["0.0.0.0:9", "[::]:9", "192.0.2.1:9", "[2001:db8::1]:9"] {
            let addr: SocketAddr = remote.parse().expect("an address");
            let e = check_listen(addr, false).expect_err(remote);
            assert!(
                e.to_string().starts_with(&format!(
                    "--metrics-listen: {addr} is not a loopback address"
                )),
                "{e}"
            );
            check_listen(addr, true).expect("allowed");
        }
    }

    #[test]
    fn requests_are_routed_strictly() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\x16\x03\x01 garbage"), Route::BadRequest);
    }

    fn sa(name: &str, spi: u32, packets: u64) -> SaEntry {
        SaEntry {
            name: name.into(),
            source: None,
            destination: None,
            mode: Mode::Transport,
            spi,
            encryption_algorithm: EncryptionAlgorithm::Aes128Cbc,
            integrity_algorithm: IntegrityAlgorithm::HmacSha256,
            owner: "user".into(),
            in_use_by: Vec::new(),
            packets,
            bytes: packets * 100,
            auth_failures: 1,
            replay_drops: 2,
            errors: 3,
            udp_encap: None,
        }
    }

    fn sp(name: &str, packets: u64) -> SpEntry {
        SpEntry {
            name: name.into(),
            source: "fd00::/64".parse().expect("a prefix"),
            destination: "fd00:1::/64".parse().expect("a prefix"),
            source_port: None,
            destination_port: None,
            protocol: UpperLayerProtocol::Any,
            direction: Direction::Out,
            action: Action::Discard,
            mode: Mode::Transport,
            sa_name: None,
            priority: None,
            packets,
            bytes: packets * 10,
        }
    }

    #[test]
    fn a_scrape_has_help_on_every_family_and_caps_the_sp_series() {
        let sps: Vec<SpEntry> = (0..5).map(|i| sp(&format!("sp{i}"), i + 1)).collect();
        let report = report(
            &Spd::new(),
            vec![sa("to-b", 0x1000, 7)],
            sps,
            Totals {
                max_sps: 2,
                reasons: vec![
                    ("drop_discard".into(), 4),
                    ("flow_cache_hit".into(), 3),
                    ("esp_encap_ok".into(), 7),
                ],
                verdicts: vec![("pass_no_policy".into(), 2), ("drop_discard".into(), 4)],
                generation: 3,
                uptime_seconds: 1,
            },
        );
        let text = render(&report).expect("rendering");
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().expect("a name"))
            .collect();
        for family in &families {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no HELP for {family}"
            );
        }
        assert!(text.contains(
            "xipsec_sa_packets_total{direction=\"unused\",sa=\"to-b\",spi=\"0x1000\"} 7"
        ));
        assert!(text.contains(
            "xipsec_sp_packets_total{action=\"discard\",direction=\"out\",sp=\"sp1\"} 2"
        ));
        assert!(!text.contains("sp=\"sp2\""), "only two SP series");
        // sp2, sp3, sp4: 3 + 4 + 5 packets.
        assert!(text.contains("xipsec_sp_other_packets_total 12"));
        assert!(text.contains("xipsec_sp_series_omitted 3"));
        assert!(text.contains("xipsec_drops_total{reason=\"drop_discard\"} 4"));
        assert!(text.contains("xipsec_engine_events_total{counter=\"esp_encap_ok\"} 7"));
        assert!(text.contains("xipsec_flow_cache_hits_total 3"));
        assert!(text.contains("xipsec_flow_cache_lookups_total 6"));
        assert!(text.contains("xipsec_flow_cache_hit_ratio 0.5"));
    }
}

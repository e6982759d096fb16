//! `xipsec daemon --metrics-listen`: a scrape taken while ESP traffic runs equals `sa list`,
//! `sp list` and `stats` taken at the same moment (each value lies between two CLI reads that
//! bracket the scrape, and the traffic provably moved on in between), per-SP series stop at
//! `--metrics-max-sps` with the rest summed, `promtool check metrics` accepts the text, no key
//! appears, and a non-loopback address is refused unless `--metrics-allow-remote`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ipsec_tests::transport::{self, Transfer};
use serde_json::Value;
use xipsec_testkit::{
    as_root,
    cli::SpArgs,
    daemon::{Node, Sandbox},
    netns::{VethPair, in_netns},
};

/// Port of the metrics endpoint in the test's own namespaces.
const PORT: u16 = 9611;

/// One sample: the family name and its labels.
type Key = (String, BTreeMap<String, String>);

/// `GET path` from `host:port`; (status line, content type, body).
fn get(addr: &str, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("sending the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("reading the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body.to_owned())
}

/// The samples of a text exposition, by family and labels.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l.split_once("=\"").expect("label=\"value\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        samples.insert(
            (name.to_owned(), labels),
            value.parse::<f64>().expect("a number"),
        );
    }
    samples
}

fn sample(samples: &BTreeMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> u64 {
    let key = (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let value = samples
        .get(&key)
        .unwrap_or_else(|| panic!("no sample {key:?} in the scrape"));
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "the counters are integers below 2^53"
    )]
    let value = *value as u64;
    value
}

/// promtool from Debian's `prometheus` package, as `cargo xtask setup` unpacks it (or PATH).
fn promtool() -> PathBuf {
    let unpacked = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools/prometheus/usr/bin/promtool");
    if unpacked.is_file() {
        return unpacked;
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .expect("sh");
    assert!(
        on_path.status.success(),
        "promtool is missing: run cargo xtask setup (it unpacks Debian's prometheus package into target/tools)"
    );
    PathBuf::from(String::from_utf8_lossy(&on_path.stdout).trim())
}

fn promtool_accepts(text: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feeding promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused the scrape: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sa list`, `sp list` and `stats` of `node`, as JSON.
fn lists(node: &Node) -> [Value; 3] {
    [["sa", "list"], ["sp", "list"], ["stats", ""]].map(|command| {
        let args: Vec<&str> = command
            .iter()
            .copied()
            .filter(|a| !a.is_empty())
            .chain(["--formatter", "json"])
            .collect();
        serde_json::from_str(&node.ok(&args)).expect("a JSON list")
    })
}

/// `field` of the entry named `name` in a JSON list.
fn field(list: &Value, key: &str, name: &str, field: &str) -> u64 {
    list.as_array()
        .expect("a list")
        .iter()
        .find(|e| e[key] == name)
        .and_then(|e| e[field].as_u64())
        .unwrap_or_else(|| panic!("{name}.{field} not in {list}"))
}

fn between(what: &str, before: u64, scraped: u64, after: u64) {
    assert!(
        before <= scraped && scraped <= after,
        "{what}: the scrape says {scraped}, the CLI said {before} before and {after} after"
    );
}

#[test]
fn a_scrape_during_traffic_equals_the_cli() {
    as_root("a_scrape_during_traffic_equals_the_cli", || {
        let net = VethPair::new("xpkm", 0x7b);
        let listen = format!("127.0.0.1:{PORT}");
        let a = Node::start_in(Sandbox::attached(&net.ns_a, &net.if_a).with_daemon_args(&[
            "--metrics-listen",
            &listen,
            "--metrics-max-sps",
            "2",
        ]));
        // b serves every address of its namespace (allowed explicitly): scraped from a, across
        // the protected link.
        let remote = format!("[::]:{PORT}");
        let b = Node::start_in(Sandbox::attached(&net.ns_b, &net.if_b).with_daemon_args(&[
            "--metrics-listen",
            &remote,
            "--metrics-allow-remote",
        ]));
        for (node, a_side) in [(&a, true), (&b, false)] {
            for command in transport::commands(&net, a_side) {
                node.ok_args(&command);
            }
        }
        // Two more SPs on a, past --metrics-max-sps 2: summed, not listed.
        for (name, port) in [("drop-9", "9"), ("drop-19", "19")] {
            let sp = SpArgs {
                dport: port,
                proto: "udp",
                action: "discard",
                sa: None,
                ..SpArgs::ipsec("any", "any", "in", name)
            };
            a.ok(&sp.args());
        }

        // Far more than flows while the test reads: stopped once measured.
        let transfer = Transfer::start(&net, 9600, 5000);
        std::thread::sleep(Duration::from_millis(800));
        let before = lists(&a);
        let (status, content_type, text) = in_netns(&net.ns_a, || get(&listen, "/metrics"));
        let after = lists(&a);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(content_type, "text/plain; version=0.0.4");
        let samples = parse(&text);

        let [sa_before, sp_before, stats_before] = &before;
        let [sa_after, sp_after, stats_after] = &after;
        // The traffic moved on while the scrape was taken: the bracket is a real one.
        assert!(
            field(sa_before, "name", "sa-ab", "packets")
                < field(sa_after, "name", "sa-ab", "packets"),
            "no traffic during the scrape: {sa_before} {sa_after}"
        );
        for (sa, spi, direction) in [("sa-ab", "0x2a01", "out"), ("sa-ba", "0x2a02", "in")] {
            let labels = [("direction", direction), ("sa", sa), ("spi", spi)];
            for (family, key) in [
                ("xipsec_sa_packets_total", "packets"),
                ("xipsec_sa_bytes_total", "bytes"),
                ("xipsec_sa_auth_failures_total", "auth_failures"),
                ("xipsec_sa_replay_drops_total", "replay_drops"),
                ("xipsec_sa_errors_total", "errors"),
            ] {
                between(
                    &format!("{sa} {key}"),
                    field(sa_before, "name", sa, key),
                    sample(&samples, family, &labels),
                    field(sa_after, "name", sa, key),
                );
            }
        }
        // SPs in creation order: the first two have series, the other two are summed.
        for (sp, direction, action) in [
            ("protect-out", "out", "ipsec"),
            ("protect-in", "in", "ipsec"),
        ] {
            let labels = [("action", action), ("direction", direction), ("sp", sp)];
            for (family, key) in [
                ("xipsec_sp_packets_total", "packets"),
                ("xipsec_sp_bytes_total", "bytes"),
            ] {
                between(
                    &format!("{sp} {key}"),
                    field(sp_before, "name", sp, key),
                    sample(&samples, family, &labels),
                    field(sp_after, "name", sp, key),
                );
            }
        }
        assert!(!text.contains("sp=\"drop-9\"") && !text.contains("sp=\"drop-19\""));
        assert_eq!(sample(&samples, "xipsec_sp_series_omitted", &[]), 2);
        let rest = |list: &Value, key: &str| {
            field(list, "name", "drop-9", key) + field(list, "name", "drop-19", key)
        };
        between(
            "other SPs' packets",
            rest(sp_before, "packets"),
            sample(&samples, "xipsec_sp_other_packets_total", &[]),
            rest(sp_after, "packets"),
        );
        // Every line of `stats` is in the scrape exactly once, bracketed.
        for entry in stats_before.as_array().expect("stats") {
            let reason = entry["reason"].as_str().expect("a reason");
            let (family, label) = if reason.starts_with("drop_") {
                ("xipsec_drops_total", "reason")
            } else if ["fragment_no_state", "flow_cache_hit"].contains(&reason) {
                ("xipsec_datapath_events_total", "event")
            } else {
                ("xipsec_engine_events_total", "counter")
            };
            between(
                reason,
                field(stats_before, "reason", reason, "packets"),
                sample(&samples, family, &[(label, reason)]),
                field(stats_after, "reason", reason, "packets"),
            );
            assert_eq!(
                text.matches(&format!("=\"{reason}\"}}")).count(),
                if reason.starts_with("drop_") { 2 } else { 1 },
                "{reason}: once in its family (drops also among the verdicts)"
            );
        }
        assert_eq!(
            sample(&samples, "xipsec_flow_cache_hits_total", &[]),
            sample(
                &samples,
                "xipsec_datapath_events_total",
                &[("event", "flow_cache_hit")]
            )
        );
        for sa in transport::sas(&net) {
            for key in [sa.enc_key.clone().unwrap_or_default(), sa.integ_key.clone()] {
                let hex = key.trim_start_matches("0x");
                assert!(!text.contains(hex), "a key in the scrape");
            }
        }
        promtool_accepts(&text);

        // b's endpoint on every address, reached over the veth (through ESP: every protocol
        // between the two is protected).
        let (status, _, remote_text) = in_netns(&net.ns_a, || {
            get(&format!("[{}]:{PORT}", net.addr_b), "/metrics")
        });
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(remote_text.contains("xipsec_sa_packets_total{direction=\"in\",sa=\"sa-ab\""));
        transfer.stop();
    });
}

/// A free loopback port of the host namespace (a no-datapath daemon runs there).
fn free_port() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let port = listener.local_addr().expect("its address").port();
    (listener, port)
}

#[test]
fn a_non_loopback_address_is_refused_unless_allowed() {
    for addr in [
        "0.0.0.0:9611",
        "[::]:9611",
        "[2001:db8::1]:9611",
        "192.0.2.7:9611",
    ] {
        let sandbox = Sandbox::new().with_daemon_args(&["--metrics-listen", addr]);
        let refused = sandbox.refused();
        assert!(
            refused.contains(&format!(
                "error: --metrics-listen: {addr} is not a loopback address; the metrics endpoint has no authentication"
            )) && refused.contains("--metrics-allow-remote"),
            "{addr}: {refused}"
        );
        assert!(!sandbox.socket().exists(), "nothing started");
        assert!(!sandbox.state_dir().exists(), "nothing written");
    }
    // --metrics-allow-remote without --metrics-listen is a usage error.
    let sandbox = Sandbox::new().with_daemon_args(&["--metrics-allow-remote"]);
    assert!(sandbox.refused().contains("--metrics-listen"));
    // A port in use stops the start, naming it.
    let (held, port) = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sandbox = Sandbox::new().with_daemon_args(&["--metrics-listen", &addr]);
    let refused = sandbox.refused();
    assert!(
        refused.contains(&format!("--metrics-listen: cannot listen on {addr}")),
        "{refused}"
    );
    drop(held);
}

#[test]
fn the_endpoint_answers_only_get_metrics() {
    let (held, port) = free_port();
    drop(held);
    let addr = format!("127.0.0.1:{port}");
    let sandbox = Sandbox::new().with_daemon_args(&["--metrics-listen", &addr]);
    let _daemon = sandbox.start();
    let (status, content_type, text) = get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(content_type, "text/plain; version=0.0.4");
    // Every family has its HELP line, and the empty daemon's scrape is valid too.
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().expect("a name");
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
    }
    assert!(text.contains("xipsec_sps 0"));
    promtool_accepts(&text);
    assert_eq!(get(&addr, "/").0, "HTTP/1.1 404 Not Found");
    let mut post = TcpStream::connect(&addr).expect("connecting");
    write!(post, "POST /metrics HTTP/1.1\r\n\r\n").expect("sending");
    let mut answer = String::new();
    post.read_to_string(&mut answer).expect("reading");
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n"),
        "{answer}"
    );
}

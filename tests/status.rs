//! `xipsec status` reports what the kernel runs, not what was asked: the XDP mode in effect
//! (`native` and `generic` on a veth, checked against `ip -d link`'s own reading of
//! `IFLA_XDP`), the attached program's id, the TC egress link, since when the programs are
//! attached (kept across a daemon restart, which swaps new programs into the pinned links), and
//! the engine's threads, TUN and AF_XDP sockets.

use std::time::Duration;

use serde_json::Value;
use xipsec_testkit::{as_root, daemon::Node, daemon::Sandbox, netns, netns::VethPair};

fn status(node: &Node) -> Value {
    serde_json::from_str(&node.ok(&["status", "--formatter", "json"])).expect("status json")
}

/// `ip -d link show` of `iface`: which XDP attachment it names (`xdp` = driver, `xdpgeneric`)
/// and the program id after `prog/xdp id`.
fn ip_link_xdp(ns: &str, iface: &str) -> (String, String) {
    let text = netns::output(ns, &["ip", "-d", "link", "show", "dev", iface]);
    let words: Vec<&str> = text.split_whitespace().collect();
    let mode = words
        .iter()
        .find(|w| **w == "xdp" || **w == "xdpgeneric" || **w == "xdpdrv")
        .map_or("none", |w| w)
        .to_owned();
    let id = words
        .windows(3)
        .find(|w| w[0] == "prog/xdp" && w[1] == "id")
        .map_or(String::new(), |w| w[2].to_owned());
    (mode, id)
}

fn one(status: &Value, field: &str) -> String {
    let list = status[field].as_array().expect(field);
    assert_eq!(list.len(), 1, "{field}: one entry per interface: {status}");
    list[0].as_str().expect("a string").to_owned()
}

#[test]
fn status_shows_the_xdp_mode_in_effect() {
    as_root("status_shows_the_xdp_mode_in_effect", || {
        for (asked, in_effect, ip_word) in [
            ("generic", "generic", "xdpgeneric"),
            ("native", "native", "xdp"),
            // auto picks generic on a veth (see the README's XDP mode section).
            ("auto", "generic", "xdpgeneric"),
        ] {
            // A pair per mode: the pinned links of one run stay attached after its daemon.
            let net = VethPair::new("xpks", 0x7a);
            let mut node = Node::start_in(
                Sandbox::attached(&net.ns_a, &net.if_a).with_daemon_args(&["--xdp-mode", asked]),
            );
            let s = status(&node);
            assert_eq!(s["xdp_mode"], asked, "the configured mode is still shown");
            assert_eq!(one(&s, "xdp_in_effect"), in_effect, "asked {asked}: {s}");
            let (ip_mode, ip_id) = ip_link_xdp(&net.ns_a, &net.if_a);
            assert_eq!(ip_mode, ip_word, "ip -d link agrees (asked {asked})");
            assert_eq!(one(&s, "xdp_program_ids"), ip_id, "the same program");
            let tc = one(&s, "tc_attachment");
            assert!(
                tc.starts_with("tcx egress program ") && tc.contains(" link "),
                "{tc}"
            );
            let since = one(&s, "attached_since");
            assert!(
                since.ends_with('Z') && since.len() == 20,
                "RFC 3339: {since}"
            );
            assert_eq!(
                s["engine_tun"].as_str().map(|t| t.starts_with("xipsec")),
                Some(true)
            );
            assert_eq!(
                s["engine_xsk"],
                serde_json::json!([format!("{} queue 0", net.if_a)]),
                "{s}"
            );
            let threads: Vec<&str> = s["engine_threads"]
                .as_array()
                .expect("threads")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            for thread in ["xipsec-esp-in", "xipsec-esp-out", "xipsec-state"] {
                assert!(threads.contains(&thread), "{thread} in {threads:?}");
            }
            assert_eq!(s["engine_last_error"], Value::Null);

            // A restart takes the pinned links over: the same attachment, a new program.
            std::thread::sleep(Duration::from_millis(1100));
            node.stop();
            node.spawn();
            let again = status(&node);
            assert_eq!(one(&again, "xdp_in_effect"), in_effect);
            assert_eq!(
                one(&again, "attached_since"),
                since,
                "the attachment is the same"
            );
            assert_ne!(
                one(&again, "xdp_program_ids"),
                one(&s, "xdp_program_ids"),
                "the new daemon's program runs"
            );
            assert_eq!(
                one(&again, "xdp_program_ids"),
                ip_link_xdp(&net.ns_a, &net.if_a).1
            );
            node.stop();
        }
    });
}

#[test]
fn status_without_a_datapath_lists_no_interface_state() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start();
    let s: Value =
        serde_json::from_str(&sandbox.ok(&["status", "--formatter", "json"])).expect("json");
    for field in [
        "xdp_in_effect",
        "xdp_program_ids",
        "tc_attachment",
        "attached_since",
        "engine_xsk",
    ] {
        assert_eq!(s[field], serde_json::json!([]), "{field}: {s}");
    }
    assert_eq!(s["engine_tun"], "");
    let table = sandbox.ok(&["status"]);
    assert!(table.contains("XDP In Effect: -"), "{table}");
}

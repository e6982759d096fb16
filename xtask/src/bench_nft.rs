//! nftables doing what xipsec does in `cargo xtask bench filter`, written the way an nftables
//! user who knows it would write it: one table of the `netdev` family whose chain hooks
//! `ingress` on the receiving device (the earliest hook, before the IP stack), and per priority
//! band one verdict map with intervals keyed on
//! `ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport` (a pipapo set: one lookup per
//! band whatever the number of policies). A concatenated interval set refuses overlapping
//! elements, so the policy set (`bench_policy`) has no overlap within a band; the bands are
//! looked up in priority order, the first that matches decides, which is xipsec's precedence.
//! Each verdict goes through a chain that counts it in a named counter (one per
//! [`Outcome`]), so the run can check that nftables gave the same verdicts as xipsec.

use std::fmt::Write as _;

use anyhow::{Context as _, anyhow};

use crate::bench_policy::{Outcome, Policy, PolicySet, UDP};

pub(crate) const TABLE: &str = "xbench";
const KEY: &str = "ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport";
const KEY_TYPE: &str = "ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service";

fn interval(port: Option<u16>) -> String {
    port.map_or_else(|| "0-65535".to_string(), |p| p.to_string())
}

fn element(p: &Policy) -> String {
    format!(
        "{}/{} . {}/{} . {UDP} . {} . {} : goto {}",
        p.src.0,
        p.src.1,
        p.dst.0,
        p.dst.1,
        interval(p.sport),
        interval(p.dport),
        p.outcome.name()
    )
}

/// The ruleset (for `nft -f`) filtering ingress of `device` with the policies of `set`.
pub(crate) fn ruleset(set: PolicySet, device: &str) -> String {
    let policies = set.policies();
    let mut bands: Vec<u16> = policies.iter().map(|p| p.priority).collect();
    bands.sort_unstable();
    bands.dedup();
    let mut out = format!("table netdev {TABLE} {{\n");
    for outcome in Outcome::ALL {
        let name = outcome.name();
        let verdict = if outcome.drops() { "drop" } else { "accept" };
        let _ = writeln!(out, "  counter {name} {{}}");
        let _ = writeln!(
            out,
            "  chain {name} {{\n    counter name \"{name}\" {verdict}\n  }}"
        );
    }
    for band in &bands {
        let _ = writeln!(
            out,
            "  map band{band} {{\n    type {KEY_TYPE} : verdict\n    flags interval\n    elements = {{"
        );
        let elements: Vec<String> = policies
            .iter()
            .filter(|p| p.priority == *band)
            .map(element)
            .collect();
        let _ = writeln!(out, "      {}\n    }}\n  }}", elements.join(",\n      "));
    }
    let _ = writeln!(
        out,
        "  chain ingress {{\n    type filter hook ingress device \"{device}\" priority -500; policy accept;"
    );
    for band in &bands {
        let _ = writeln!(out, "    {KEY} vmap @band{band}");
    }
    let _ = writeln!(out, "    goto {}\n  }}\n}}", Outcome::Miss.name());
    out
}

/// The named counters' packet counts (by [`Outcome`], in [`Outcome::ALL`] order) of the table
/// in namespace `ns`.
pub(crate) fn counters(ns: &str) -> anyhow::Result<[u64; 5]> {
    let out = crate::lab::Lab::exec(
        ns,
        &[
            "nft", "-t", "-j", "list", "counters", "table", "netdev", TABLE,
        ],
    )
    .output()
    .context("nft list counters")?;
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("nft -j list counters")?;
    let mut counts = [0u64; 5];
    for item in json["nftables"].as_array().into_iter().flatten() {
        let counter = &item["counter"];
        let Some(name) = counter["name"].as_str() else {
            continue;
        };
        if let Some(i) = Outcome::ALL.iter().position(|o| o.name() == name) {
            counts[i] = counter["packets"]
                .as_u64()
                .ok_or_else(|| anyhow!("counter {name} has no packets: {counter}"))?;
        }
    }
    Ok(counts)
}

/// The ruleset's verdicts against xipsec's reference classifier (`Spd::classify`), flow by
/// flow: frames sent from a veth's peer, nftables' named counters read after each.
#[cfg(test)]
mod tests {
    use std::{collections::HashMap, net::Ipv6Addr, os::fd::AsRawFd as _};

    use ipsec_user::model::{Direction, Flow as ModelFlow, L4, SpAddArgs, Spd};
    use xipsec_testkit::netns::{self, VethPair};

    use super::*;
    use crate::{bench_gen, bench_policy::Flow};

    const TEST: &str = "nft_ruleset_matches_the_reference_classifier";
    const POLICIES: usize = 1_000;
    const FLOWS: usize = 131_072;

    /// The policy set as xipsec's model holds it.
    fn model(set: PolicySet) -> Spd {
        let mut spd = Spd::default();
        for p in set.policies() {
            let port = |p: Option<u16>| p.map_or("any".to_string(), |p| p.to_string());
            spd.add_sp(&SpAddArgs {
                sp_source: Some(format!("{}/{}", p.src.0, p.src.1)),
                sp_destination: Some(format!("{}/{}", p.dst.0, p.dst.1)),
                source_port: Some(port(p.sport)),
                destination_port: Some(port(p.dport)),
                upper_layer_protocol: Some("udp".into()),
                flow_direction: Some("in".into()),
                action: Some(if p.discard { "discard" } else { "none" }.into()),
                sp_name: Some(p.name.clone()),
                priority: Some(p.priority.to_string()),
                ..SpAddArgs::default()
            })
            .expect("adding a bench policy to the model");
        }
        spd
    }

    /// Flows of both tables, and random ones around the policies.
    fn sample(set: PolicySet) -> Vec<Flow> {
        let mut flows: Vec<Flow> = (0..FLOWS)
            .step_by(1_009)
            .flat_map(|i| [set.flow(true, i), set.flow(false, i)])
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..100 {
            let r = next();
            let src = (0x2001_0db8_0001_0000_u128 << 64) | u128::from(r & 0xf_ffff);
            let sport =
                [1000, 1003, 1007, 1008, 2000, 65535][usize::try_from(r >> 20).unwrap_or(0) % 6];
            let dport = [4000, 5000, 4001][usize::try_from(r >> 40).unwrap_or(0) % 3];
            let dst = (0x2001_0db8_0002_0000_u128 << 64) | u128::from(r >> 48);
            flows.push(Flow {
                src: Ipv6Addr::from(src),
                dst: Ipv6Addr::from(dst),
                sport,
                dport,
            });
        }
        flows
    }

    /// What the reference classifier makes of `flow`.
    fn reference(spd: &Spd, names: &HashMap<String, Outcome>, flow: &Flow) -> Outcome {
        let model_flow = ModelFlow {
            src: flow.src,
            dst: flow.dst,
            next_header: UDP,
            l4: L4::Ports {
                src: flow.sport,
                dst: flow.dport,
            },
        };
        spd.classify(Direction::In, &model_flow)
            .map_or(Outcome::Miss, |sp| names[&sp.name])
    }

    /// One frame of `flow` out of `iface` (an AF_PACKET socket on the calling thread's
    /// namespace).
    fn send(iface: &str, template: &[u8], flow: &Flow) {
        use ipsec_common::abi::bench::{FRAME_DPORT, FRAME_DST, FRAME_SPORT, FRAME_SRC};
        let mut frame = template.to_vec();
        frame[FRAME_SRC..FRAME_SRC + 16].copy_from_slice(&flow.src.octets());
        frame[FRAME_DST..FRAME_DST + 16].copy_from_slice(&flow.dst.octets());
        frame[FRAME_SPORT..FRAME_SPORT + 2].copy_from_slice(&flow.sport.to_be_bytes());
        frame[FRAME_DPORT..FRAME_DPORT + 2].copy_from_slice(&flow.dport.to_be_bytes());
        let name = std::ffi::CString::new(iface).expect("an interface name");
        // SAFETY: plain socket calls on a descriptor this function owns (closed by OwnedFd);
        // the address and buffer outlive the calls and their lengths are theirs.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = u16::try_from(libc::AF_PACKET).expect("AF_PACKET fits u16");
            addr.sll_ifindex =
                i32::try_from(libc::if_nametoindex(name.as_ptr())).expect("an ifindex fits i32");
            addr.sll_halen = 6;
            let sent = libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).expect("fits u32"),
            );
            assert_eq!(
                usize::try_from(sent).ok(),
                Some(frame.len()),
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// nftables' verdict of the frame just sent: the counter that grew (the no-policy counter
    /// only when no other did: the veths' own MLD reports land there too).
    fn nft_verdict(before: &[u64; 5], after: &[u64; 5]) -> Option<Outcome> {
        let grew: Vec<Outcome> = Outcome::ALL
            .iter()
            .zip(before.iter().zip(after))
            .filter(|(_, (b, a))| a > b)
            .map(|(o, _)| *o)
            .collect();
        match grew.as_slice() {
            [] => None,
            [one] => Some(*one),
            several => several.iter().copied().find(|o| *o != Outcome::Miss),
        }
    }

    #[test]
    fn nft_ruleset_matches_the_reference_classifier() {
        if !xipsec_testkit::require_root(TEST)
            || !xipsec_testkit::skip_unless(
                std::process::Command::new("nft")
                    .arg("--version")
                    .output()
                    .is_ok(),
                TEST,
                "needs nft (cargo xtask setup installs nftables)",
            )
        {
            return;
        }
        let set = PolicySet::new(POLICIES, FLOWS).expect("a policy set");
        let spd = model(set);
        let names: HashMap<String, Outcome> = set
            .policies()
            .into_iter()
            .map(|p| (p.name, p.outcome))
            .collect();
        let net = VethPair::new("xfnt", 0xbf6);
        let dir = tempfile::tempdir().expect("a scratch directory");
        let file = dir.path().join("ruleset.nft");
        std::fs::write(&file, ruleset(set, &net.if_b)).expect("writing the ruleset");
        netns::output(
            &net.ns_b,
            &["nft", "-f", file.to_str().expect("utf-8 path")],
        );
        let template = bench_gen::template(
            bench_gen::mac(&net.ns_a, &net.if_a).expect("a MAC address"),
            bench_gen::mac(&net.ns_b, &net.if_b).expect("a MAC address"),
        );
        let flows = sample(set);
        let mut seen = HashMap::new();
        for flow in &flows {
            let want = reference(&spd, &names, flow);
            assert_eq!(
                set.verdict(flow),
                want,
                "the bench's expectation of {flow:?} differs from the reference classifier"
            );
            let before = counters(&net.ns_b).expect("nft counters");
            netns::in_netns(&net.ns_a, || send(&net.if_a, &template, flow));
            let after = counters(&net.ns_b).expect("nft counters");
            assert_eq!(
                nft_verdict(&before, &after),
                Some(want),
                "nftables' verdict of {flow:?}"
            );
            *seen.entry(want).or_insert(0) += 1;
        }
        // The sample reaches every outcome, so the comparison covers every band and verdict.
        assert_eq!(seen.len(), Outcome::ALL.len(), "outcomes sampled: {seen:?}");
    }
}

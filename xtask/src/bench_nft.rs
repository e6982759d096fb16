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
        &["nft", "-j", "list", "counters", "table", "netdev", TABLE],
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

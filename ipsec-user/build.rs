//! Builds the eBPF programs of `ipsec-ebpf` with the nightly toolchain and bpf-linker (aya-build),
//! so `cargo build` of the daemon always embeds programs that match the shared ABI. Both objects
//! come out of one build: `ipsec` (production: what the daemon loads and pins) and `ipsec-bench`
//! (the same programs plus the benchmark baselines, for `xipsec-bench-classify` only).
//!
//! With `AYA_BUILD_SKIP=1` (set for pure userspace work, e.g. model or crypto tests on a machine
//! without bpf-linker) empty objects are embedded instead; loading one fails with a clear error.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The bin targets of `ipsec-ebpf`, each an eBPF object `kernel.rs` embeds.
const OBJECTS: [&str; 2] = ["ipsec", "ipsec-bench"];

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "ipsec-ebpf")
        .ok_or_else(|| anyhow!("ipsec-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("ipsec-ebpf manifest has no parent"))?
        .as_str()
        .to_owned();

    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
        for object in OBJECTS {
            let out = out_dir.join(object);
            if !out.exists() {
                std::fs::write(&out, []).context("write stub eBPF object")?;
            }
        }
    }
    aya_build::build_ebpf(
        [Package {
            name: "ipsec-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

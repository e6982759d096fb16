//! `cargo xtask setup`: idempotent bootstrap of everything the build and the tests need.
//!
//! - the nightly toolchain (minimal profile), its `rust-src` (eBPF builds `core` itself) and
//!   `clippy` (the eBPF lints);
//! - `bpf-linker` 0.13, built against the nightly toolchain's own `libLLVM`: Debian's LLVM is
//!   too old. We give bpf-linker's build an `LLVM_PREFIX` holding a `bin/llvm-config` shim and a
//!   `lib/` with symlinks to that library under `libLLVM.so` and its soname. The library file,
//!   its soname and the LLVM major are detected, never hard-coded;
//! - `cargo-fuzz`, built with the stable toolchain (the fuzz runs themselves use nightly);
//! - Debian packages (iproute2, tcpdump, iperf3, openssl, nftables, strongSwan, tshark,
//!   ...) and PyPI packages (scapy). One `dpkg-query` for all of them: quick when nothing is
//!   missing.

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

use crate::util::{self, output};

/// Nightly components: `rust-src` (the eBPF build compiles `core` itself) and `clippy` (the
/// minimal profile leaves it out; `cargo xtask test` lints `ipsec-ebpf` with it).
const NIGHTLY_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];
const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// LLVM majors bpf-linker 0.13 has a feature for.
const BPF_LINKER_LLVM: [u32; 3] = [21, 22, 23];
/// Debian packages. Beyond the build and the tests: `nftables` (the competitor of `bench
/// filter`), strongSwan's charon with its `kernel-libipsec` plugin, its AES-NI and OpenSSL
/// crypto plugins and `swanctl` (the competitor of `bench e2e`); `tshark` (Wireshark's ESP
/// dissector decrypts captures with `xipsec sa export --wireshark`'s table in
/// `tests/wireshark.rs`).
const APT_PACKAGES: [&str; 14] = [
    "iproute2",
    "iputils-ping",
    "tcpdump",
    "iperf3",
    "openssl",
    "binutils",
    "netcat-openbsd",
    "procps",
    "nftables",
    "strongswan-charon",
    "libcharon-extra-plugins",
    "libstrongswan-standard-plugins",
    "strongswan-swanctl",
    "tshark",
];
/// Debconf answers given before installing, so `apt-get` asks nothing: wireshark-common's
/// question whether non-root users may capture (no: the tests run as root).
const DEBCONF_SELECTIONS: &str = "wireshark-common wireshark-common/install-setuid boolean false\n";
/// scapy (the ESP oracle of the interop tests) and `cryptography`, which scapy's ESP and the
/// IKE key-derivation script (`tests/fixtures/ike_kat.py`) use.
const PYPI_PACKAGES: [(&str, &str); 2] = [
    ("scapy", "scapy==2.8.0"),
    ("cryptography", "cryptography>=41"),
];

pub(crate) fn run() -> anyhow::Result<()> {
    ensure()?;
    eprintln!("setup: everything is in place");
    Ok(())
}

/// Install whatever is missing; quick when nothing is.
pub(crate) fn ensure() -> anyhow::Result<()> {
    ensure_nightly()?;
    ensure_bpf_linker()?;
    ensure_cargo_fuzz()?;
    ensure_apt()?;
    ensure_pypi()?;
    ensure_packaging_tools()?;
    Ok(())
}

fn ensure_nightly() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        util::run(
            Command::new("rustup")
                .args(["toolchain", "install", "nightly"])
                .args(["--profile", "minimal"]),
        )?;
    }
    let installed = output(
        Command::new("rustup")
            .args(["component", "list", "--installed"])
            .args(["--toolchain", "nightly"]),
    )
    .unwrap_or_default();
    for component in NIGHTLY_COMPONENTS {
        if !installed.lines().any(|l| l.starts_with(component)) {
            util::run(
                Command::new("rustup")
                    .args(["component", "add", component])
                    .args(["--toolchain", "nightly"]),
            )?;
        }
    }
    Ok(())
}

/// `cargo fuzz` (cargo xtask fuzz, and the smoke run of cargo xtask test).
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"]))
        .is_some_and(|v| v.contains(CARGO_FUZZ_VERSION))
    {
        return Ok(());
    }
    util::run(
        Command::new("cargo")
            .args([
                "install",
                &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
                "--locked",
                "--force",
            ])
            // The workspace's target dir would be locked by the running xtask.
            .env(
                "CARGO_TARGET_DIR",
                util::root().join("target").join("cargo-fuzz-build"),
            ),
    )
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
            .ok_or_else(|| anyhow!("rustc +nightly --print sysroot failed"))?,
    );
    let verbose = output(Command::new("rustc").args(["+nightly", "-vV"]))
        .ok_or_else(|| anyhow!("rustc +nightly -vV failed"))?;
    let llvm_version = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .ok_or_else(|| anyhow!("rustc +nightly -vV prints no LLVM version"))?
        .trim()
        .to_string();
    let major: u32 = llvm_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| anyhow!("cannot read the LLVM major from {llvm_version}"))?;
    if !BPF_LINKER_LLVM.contains(&major) {
        bail!(
            "nightly's LLVM {major} is not supported by bpf-linker {BPF_LINKER_VERSION} (needs one of {BPF_LINKER_LLVM:?})"
        );
    }
    let library = find_libllvm(&sysroot.join("lib"))?;
    let soname = soname(&library)?;
    let prefix = util::root()
        .join("target")
        .join(format!("llvm-prefix-{llvm_version}"));
    fs::create_dir_all(prefix.join("bin"))?;
    fs::create_dir_all(prefix.join("lib"))?;
    for name in ["libLLVM.so", soname.as_str()] {
        let link = prefix.join("lib").join(name);
        let _ = fs::remove_file(&link);
        symlink(&library, &link).with_context(|| format!("symlink {}", link.display()))?;
    }
    let shim = prefix.join("bin").join("llvm-config");
    fs::write(&shim, llvm_config_shim(&prefix, &llvm_version))?;
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755))?;

    let path = format!(
        "{}:{}",
        prefix.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("cargo");
    cmd.args([
        "+nightly",
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ])
    .env("LLVM_PREFIX", &prefix)
    .env(format!("LLVM_SYS_{major}1_PREFIX"), &prefix)
    .env("PATH", path)
    // The workspace's target dir would be locked by the running xtask.
    .env(
        "CARGO_TARGET_DIR",
        util::root().join("target").join("bpf-linker-build"),
    );
    util::run(&mut cmd)
}

/// The real ELF `libLLVM*` in the toolchain's lib dir (one of the names is a linker script).
fn find_libllvm(dir: &Path) -> anyhow::Result<PathBuf> {
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with("libLLVM") {
            continue;
        }
        let mut magic = [0u8; 4];
        if let Ok(mut f) = fs::File::open(&path) {
            use std::io::Read as _;
            if f.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF" {
                return Ok(path);
            }
        }
    }
    bail!("no libLLVM shared library in {}", dir.display())
}

fn soname(library: &Path) -> anyhow::Result<String> {
    let dynamic = output(Command::new("readelf").arg("-d").arg(library)).unwrap_or_default();
    if let Some(name) = dynamic
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .and_then(|l| l.split('[').nth(1))
        .and_then(|l| l.split(']').next())
    {
        return Ok(name.to_string());
    }
    // Without readelf, the file name is the soname for rustup's libLLVM.
    Ok(library
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("library path has no file name"))?
        .to_string())
}

fn llvm_config_shim(prefix: &Path, version: &str) -> String {
    let p = prefix.display();
    format!(
        r#"#!/bin/sh
# llvm-config for the nightly toolchain's libLLVM (written by cargo xtask setup).
for a in "$@"; do case "$a" in --link-static) exit 1;; esac; done
case "$1" in
--version) echo {version};;
--prefix) echo {p};;
--libdir) echo {p}/lib;;
--bindir) echo {p}/bin;;
--includedir) echo {p}/include;;
--libnames) echo libLLVM.so;;
--libs) echo -lLLVM;;
--system-libs|--cflags|--cxxflags|--ldflags) echo;;
--shared-mode) echo shared;;
--build-mode) echo Release;;
*) echo "llvm-config shim: unsupported $*" >&2; exit 1;;
esac
"#
    )
}

fn ensure_apt() -> anyhow::Result<()> {
    // One query for all: dpkg-query fails when one is unknown, but still prints the others.
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(APT_PACKAGES)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let installed: Vec<&str> = status
        .lines()
        .filter(|l| l.ends_with("install ok installed"))
        .filter_map(|l| l.split(' ').next())
        .map(|name| name.split(':').next().unwrap_or(name))
        .collect();
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "missing Debian packages {missing:?}; install them as root (apt-get install {})",
            missing.join(" ")
        );
    }
    util::run(Command::new("apt-get").args(["update", "-q"]))?;
    preseed_debconf()?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Feed [`DEBCONF_SELECTIONS`] to `debconf-set-selections`.
fn preseed_debconf() -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("debconf-set-selections")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running debconf-set-selections")?;
    child
        .stdin
        .take()
        .context("debconf-set-selections' stdin")?
        .write_all(DEBCONF_SELECTIONS.as_bytes())
        .context("writing to debconf-set-selections")?;
    let status = child.wait().context("waiting for debconf-set-selections")?;
    if !status.success() {
        bail!("debconf-set-selections failed: {status}");
    }
    Ok(())
}

fn ensure_pypi() -> anyhow::Result<()> {
    for (module, requirement) in PYPI_PACKAGES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            util::run(Command::new("python3").args(["-m", "pip", "install", "-q", requirement]))?;
        }
    }
    Ok(())
}

/// What `cargo xtask dist` and the package, status and metrics tests use: `dpkg-deb`
/// (dpkg), `gzip`, `strip`/`objdump` (binutils, above), `man` and groff to render the man
/// pages, `systemd-analyze` (systemd; it is not started), `setpriv` (util-linux) to run the
/// daemon with the unit's capabilities.
const PACKAGING_APT: [&str; 6] = [
    "dpkg",
    "gzip",
    "man-db",
    "groff-base",
    "systemd",
    "util-linux",
];

/// Where promtool (`promtool check metrics`) is unpacked, under the workspace.
pub(crate) const PROMTOOL_DIR: &str = "target/tools/prometheus";

/// The packaging tools, and promtool from Debian's `prometheus` package: the package is
/// downloaded and only unpacked (`dpkg-deb -x`) under [`PROMTOOL_DIR`], so no Prometheus
/// server is installed or started on the machine.
fn ensure_packaging_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGING_APT
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.ends_with("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        if !util::is_root() {
            bail!(
                "missing Debian packages {missing:?}; install them as root (apt-get install {})",
                missing.join(" ")
            );
        }
        util::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let dir = util::root().join(PROMTOOL_DIR);
    if dir.join("usr/bin/promtool").is_file() {
        return Ok(());
    }
    let download = tempfile::tempdir()?;
    let fetched = Command::new("apt-get")
        .args(["download", "-q", "prometheus"])
        .current_dir(download.path())
        .status()
        .is_ok_and(|s| s.success());
    if !fetched {
        // A fresh machine has no package lists yet.
        util::run(Command::new("apt-get").args(["update", "-q"]))?;
        util::run(
            Command::new("apt-get")
                .args(["download", "-q", "prometheus"])
                .current_dir(download.path()),
        )?;
    }
    let deb = std::fs::read_dir(download.path())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("apt-get download prometheus left no .deb"))?;
    std::fs::create_dir_all(&dir)?;
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))
}

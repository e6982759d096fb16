//! Fixtures for the kernel tests: privilege checks, namespaces and daemons, captures that cannot
//! lie and an independent ESP decryptor, frame builders, random SPDs and packets biased to
//! policy edges, and the reference verdict (model parser + reference classifier).

pub mod capture;
pub mod daemon;
pub mod esp_oracle;
pub mod frames;
pub mod maps;
pub mod netns;
pub mod random;
pub mod reference;
pub mod traffic;

/// True when running under CI: `ipsec_user::testing::ci`, the one rule of the workspace.
pub fn ci() -> bool {
    ipsec_user::testing::ci()
}

/// Kernel tests need root. Under CI (see [`ci`]) a missing privilege fails the test loudly;
/// elsewhere the test prints why it did not run and returns `false`.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        !ci(),
        "{test}: needs root (BPF, netns); run the tests as root: sudo -E cargo xtask test"
    );
    eprintln!("{test}: not run: needs root (BPF, netns); run: sudo -E cargo xtask test");
    false
}

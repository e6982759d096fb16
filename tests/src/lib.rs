//! Fixtures for the kernel tests: privilege checks, frame builders, random SPDs and packets
//! biased to policy edges, and the reference verdict (model parser + reference classifier).

pub mod daemon;
pub mod frames;
pub mod maps;
pub mod netns;
pub mod random;
pub mod reference;
pub mod traffic;

/// Kernel tests need root. Under `CI=true` a missing privilege fails the test loudly; elsewhere
/// the test prints why it did not run and returns `false`.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{test}: needs root (BPF, netns); run the tests as root: sudo -E cargo xtask test"
    );
    eprintln!("{test}: not run: needs root (BPF, netns); run: sudo -E cargo xtask test");
    false
}

//! Makes sure a BPF filesystem is mounted where we pin (fresh machines here lack `/sys/fs/bpf`).

use std::{io, path::Path};

use nix::mount::MsFlags;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

/// Whether `dir` is on a BPF filesystem.
pub fn is_bpffs(dir: &Path) -> io::Result<bool> {
    Ok(statfs(dir)?.filesystem_type() == BPF_FS_MAGIC)
}

fn mount_bpffs(target: &Path) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    nix::mount::mount(
        Some("bpf"),
        target,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )?;
    Ok(())
}

/// Make `pin_dir` a directory on bpffs: under `/sys/fs/bpf`, mount bpffs there when it is
/// missing; elsewhere, mount one at `pin_dir` itself when it is not on bpffs already.
pub fn ensure_pin_dir(pin_dir: &Path) -> io::Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(root) {
        if !is_bpffs(root).unwrap_or(false) {
            mount_bpffs(root)?;
        }
        std::fs::create_dir_all(pin_dir)?;
    } else {
        std::fs::create_dir_all(pin_dir)?;
        if !is_bpffs(pin_dir)? {
            mount_bpffs(pin_dir)?;
        }
    }
    if !is_bpffs(pin_dir)? {
        return Err(io::Error::other(format!(
            "{} is not on a BPF filesystem (mount one with: mount -t bpf bpf {})",
            pin_dir.display(),
            pin_dir.display()
        )));
    }
    Ok(())
}

//! Makes sure a BPF filesystem is mounted where we pin (fresh machines here lack `/sys/fs/bpf`).

use std::{ffi::CString, io, os::unix::ffi::OsStrExt as _, path::Path};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `dir` is on a BPF filesystem.
pub fn is_bpffs(dir: &Path) -> io::Result<bool> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: `statfs` writes into a zeroed struct we own; `path` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(path.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(target: &Path) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    let src = CString::new("bpf").expect("static string");
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null for bpffs.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
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

//! `xipsec generate man|completions DIR` (hidden): the man pages and shell completions, made
//! from the clap definitions of this very binary, so a package never ships pages that describe
//! another version.
//!
//! Man pages are section 8 (the daemon and the commands need root): `xipsec.8` and one page per
//! visible subcommand, named by its path (`xipsec-sa-add.8`), as git and cargo name theirs.
//! Completions: `xipsec.bash`, `_xipsec` (zsh) and `xipsec.fish`.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Subcommand};

use super::{Cli, Failure};

/// What to generate.
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Man pages into DIR: xipsec.8 and one per subcommand.
    Man { dir: PathBuf },
    /// bash, zsh and fish completion scripts into DIR.
    Completions { dir: PathBuf },
}

/// The man page section.
pub const SECTION: &str = "8";

/// Run `xipsec generate ...`, printing each file written.
pub fn run(what: &Generate) -> Result<(), Failure> {
    let written = match what {
        Generate::Man { dir } => man_pages(dir),
        Generate::Completions { dir } => completions(dir),
    }
    .map_err(|e| Failure::new(format!("cannot generate: {e}")))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// Write every man page into `dir` (created if missing); the paths written.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command();
    command.build();
    let mut written = Vec::new();
    write_page(&command, "xipsec", dir, &mut written)?;
    Ok(written)
}

fn write_page(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let page = command.clone().name(name.to_owned());
    let man = clap_mangen::Man::new(page)
        .section(SECTION)
        .source(format!("xipsec {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration");
    let path = dir.join(format!("{name}.{SECTION}"));
    let mut out = Vec::new();
    man.render(&mut out)?;
    std::fs::write(&path, out)?;
    written.push(path);
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// Write the bash, zsh and fish completion scripts into `dir`; the paths written.
pub fn completions(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command();
    [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ]
    .into_iter()
    .map(|shell| clap_complete::generate_to(shell, &mut command, "xipsec", dir))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn one_page_per_visible_command_and_no_hidden_one() {
        let dir = tempfile::tempdir().expect("a directory");
        let pages = man_pages(dir.path()).expect("generating");
        let names = file_names(&pages);
        for wanted in [
            "xipsec.8",
            "xipsec-sa.8",
            "xipsec-sa-add.8",
            "xipsec-sp-remove.8",
            "xipsec-daemon.8",
            "xipsec-status.8",
        ] {
            assert!(names.contains(&wanted.to_owned()), "{wanted} in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("generate") || n.contains("help"))
        );
        let daemon = std::fs::read_to_string(dir.path().join("xipsec-daemon.8")).expect("reading");
        assert!(
            daemon.starts_with(".ie"),
            "roff: {}",
            &daemon[..40.min(daemon.len())]
        );
        assert!(
            daemon.contains("metrics\\-listen"),
            "the options are documented"
        );
    }

    #[test]
    fn three_shells_get_completions() {
        let dir = tempfile::tempdir().expect("a directory");
        let files = completions(dir.path()).expect("generating");
        let names = file_names(&files);
        assert_eq!(names, ["xipsec.bash", "_xipsec", "xipsec.fish"]);
        let bash = std::fs::read_to_string(&files[0]).expect("reading");
        assert!(bash.contains("reset-replay"));
    }
}

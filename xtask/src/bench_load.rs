//! `cargo xtask bench load`: placeholder until helper batch's version lands (the lead keeps
//! that one at the merge).

use anyhow::bail;

pub(crate) fn run(_json: bool, _args: &[String]) -> anyhow::Result<()> {
    bail!("bench load: not built yet")
}

//! `xipsec explain` in the kernel: the explain programs (`ipsec_common::explain`) loaded with the
//! live ones, over the same maps, and run on a frame with `BPF_PROG_TEST_RUN`.
//!
//! Contract: [`KernelDatapath::explain`] changes nothing the live programs read or count (no
//! counter, flow-cache entry or fragment state: the programs only read those maps, and search
//! in their own per-CPU state); it returns what they found, as they wrote it.

use aya::{Ebpf, TestRun, TestRunOptions, programs::Xdp};
use ipsec_common::explain::{EXPLAIN_MAGIC, ExplainResult, PROG_EXPLAIN_IN, PROG_EXPLAIN_OUT};

use super::kernel::{DatapathError, KernelDatapath};
use crate::model::Direction;

/// The explain program of `direction`.
fn program_name(direction: Direction) -> &'static str {
    match direction {
        Direction::In => PROG_EXPLAIN_IN,
        Direction::Out => PROG_EXPLAIN_OUT,
    }
}

/// Loads (verifies) both explain programs into `ebpf`, which created the live maps they read.
pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    for name in [PROG_EXPLAIN_IN, PROG_EXPLAIN_OUT] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        prog.load()
            .map_err(|source| DatapathError::Program { name, source })?;
    }
    Ok(())
}

impl KernelDatapath {
    /// What the kernel's classifier makes of `frame` (an Ethernet frame) in `direction`; see
    /// the module contract.
    ///
    /// # Errors
    /// The program is missing or the test run fails, or it wrote no result
    /// ([`DatapathError::ExplainResult`]).
    pub fn explain(
        &self,
        direction: Direction,
        frame: &[u8],
    ) -> Result<ExplainResult, DatapathError> {
        let name = program_name(direction);
        let prog: &Xdp = self
            .ebpf()
            .program(name)
            .ok_or(DatapathError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        let mut out = vec![0u8; size_of::<ExplainResult>() + frame.len()];
        let run = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(|source| DatapathError::TestRun {
                program: name,
                source,
            })?;
        let written = out
            .get(..size_of::<ExplainResult>().min(run.data_size_out as usize))
            .and_then(|bytes| bytemuck::try_pod_read_unaligned::<ExplainResult>(bytes).ok())
            .filter(|result| result.magic == EXPLAIN_MAGIC);
        written.ok_or(DatapathError::ExplainResult { program: name })
    }
}

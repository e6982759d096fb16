//! Project tasks: `cargo xtask setup|build|test|bench|demo|fuzz`. One module per command.

mod bench;
mod bench_filter;
mod bench_gen;
mod bench_load;
mod bench_nft;
mod bench_policy;
mod bench_probe;
mod bench_strongswan;
mod build;
mod demo;
mod dist;
mod fuzz;
mod lab;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "xipsec project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building, testing and benchmarking need: nightly + rust-src, bpf-linker,
    /// cargo-fuzz, apt packages (nftables, strongSwan, ...) and PyPI packages.
    Setup,
    /// Build everything (eBPF programs included) in release mode.
    Build,
    /// Run setup if needed, build, then every test (unit, integration, kernel), then a fuzz smoke run.
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Benchmarks (not tests): classify, esp, e2e, filter, load.
    Bench {
        #[arg(value_parser = ["classify", "esp", "e2e", "filter", "load"])]
        which: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Extra arguments for the benchmark binary.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Two namespaces, a daemon, policies of each action, traffic, counters, cleanup.
    Demo {
        /// Use target/release/xipsec as it is, without building first (the demo test runs the
        /// binary the other tests run).
        #[arg(long)]
        no_build: bool,
    },
    /// Build the Debian package (target/dist/xipsec_VERSION_ARCH.deb): binary, systemd unit,
    /// /etc/default/xipsec, completions, man pages, licence notes.
    Dist {
        /// Package this xipsec binary instead of building target/release/xipsec (the package
        /// test passes the one the other tests run).
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
    },
    /// Build the cargo-fuzz targets of fuzz/ and run one or all of them, one after the other.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
        /// Also stop a target after this many executions.
        #[arg(long)]
        runs: Option<u64>,
        /// One target (default: all of them; `cd fuzz && cargo +nightly fuzz list`).
        target: Option<String>,
        /// Extra libFuzzer arguments, after `--` (e.g. `-- -max_len=8192`).
        #[arg(last = true)]
        libfuzzer_args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build => build::run(),
        Command::Test { args } => test::run(&args),
        Command::Bench { which, json, args } => bench::run(&which, json, &args),
        Command::Demo { no_build } => demo::run(no_build),
        Command::Dist { binary } => dist::run(binary.as_deref()),
        Command::Fuzz {
            seconds,
            runs,
            target,
            libfuzzer_args,
        } => fuzz::run(&fuzz::Options {
            seconds,
            runs,
            target: target.as_deref(),
            extra: &libfuzzer_args,
        }),
    }
}

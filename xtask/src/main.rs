//! Project tasks: `cargo xtask setup|build|test|bench|demo`. One module per command.

mod bench;
mod build;
mod demo;
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
    /// Install what building and testing need: nightly + rust-src, bpf-linker, apt and PyPI packages.
    Setup,
    /// Build everything (eBPF programs included) in release mode.
    Build,
    /// Run setup if needed, build, then every test (unit, integration, kernel).
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Benchmarks (not tests): classify, esp, e2e.
    Bench {
        #[arg(value_parser = ["classify", "esp", "e2e"])]
        which: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Extra arguments for the benchmark binary.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Two namespaces, a daemon, policies of each action, traffic, counters, cleanup.
    Demo,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build => build::run(),
        Command::Test { args } => test::run(&args),
        Command::Bench { which, json, args } => bench::run(&which, json, &args),
        Command::Demo => demo::run(),
    }
}

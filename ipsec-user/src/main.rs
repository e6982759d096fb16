//! `xipsec`: the command line and the daemon in one binary.
//!
//! Client commands talk to the daemon over its control socket and exit; `xipsec daemon` runs
//! the daemon until SIGINT or SIGTERM. Errors are one line on stderr starting `error:` and a
//! non-zero exit code.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ipsec_user::cli::{self, Command, DaemonArgs};
use ipsec_user::daemon::{
    self, ControlGroup, ControlLimits, DaemonConfig, Datapath, MetricsConfig, NoDatapath, Notifier,
    Operations, XdpMode,
};
use ipsec_user::engine::{self, EngineConfig};

fn main() -> ExitCode {
    let args = cli::normalize_args(std::env::args_os());
    let cli = match cli::parse(args) {
        Ok(cli) => cli,
        Err(exit) => return exit.report(),
    };
    match cli.command {
        Command::Daemon(args) => match run_daemon(cli.socket, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ => match cli::run(cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => failure.report(),
        },
    }
}

fn run_daemon(socket: std::path::PathBuf, args: DaemonArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Checked before anything is loaded or attached: a refused option changes nothing.
    let metrics = match args.metrics_listen {
        Some(listen) => {
            daemon::metrics::check_listen(listen, args.metrics_allow_remote)?;
            Some(MetricsConfig {
                listen,
                max_sps: args.metrics_max_sps,
            })
        }
        None => None,
    };
    let operations = Operations {
        metrics,
        notifier: Some(Notifier::from_env()?),
    };
    let config = DaemonConfig {
        socket,
        state_dir: args.state_dir,
        interfaces: args.interfaces,
        xdp_mode: args.xdp_mode,
        pin_dir: args.pin_dir,
        datapath_attached: !args.no_datapath,
        control: ControlLimits {
            group: args
                .control_group
                .as_deref()
                .map(ControlGroup::lookup)
                .transpose()?,
            ..ControlLimits::default()
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let datapath: Box<dyn Datapath> = if args.no_datapath {
            Box::new(NoDatapath)
        } else {
            let engine = EngineConfig {
                rx_coalesce: Duration::from_micros(u64::from(args.esp_rx_coalesce_us)),
                tdes_block_limit: args.tdes_block_limit,
                xsk_tx: args.esp_tx == ipsec_user::cli::args::EspTx::Xdp,
                udp_gso: args.esp_gso == ipsec_user::cli::args::EspGso::On,
                ..EngineConfig::new(config.state_dir.clone())
            };
            open_datapath(&config.interfaces, config.xdp_mode, &config.pin_dir, engine)?
        };
        let stop = async {
            tokio::select! {
                () = shutdown_signal() => {}
                () = engine_death() => {}
            }
        };
        daemon::serve_with(config, operations, datapath, stop).await
    })?;
    // A dead engine thread ends the daemon with an error, so a supervisor (systemd's
    // Restart=on-failure) starts a fresh one; the pinned programs drop protected traffic
    // meanwhile (fail closed).
    if let Some(death) = engine::death() {
        anyhow::bail!(
            "{death}; exiting so a supervisor restarts xipsec (protected flows fail closed until then)"
        );
    }
    Ok(())
}

/// Completes when an ESP engine thread has died.
async fn engine_death() {
    while engine::death().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The kernel datapath for `interfaces`: programs loaded and pinned now, attached after the
/// restored state is in the maps.
fn open_datapath(
    interfaces: &[String],
    xdp_mode: XdpMode,
    pin_dir: &std::path::Path,
    engine: EngineConfig,
) -> anyhow::Result<Box<dyn Datapath>> {
    Ok(ipsec_user::daemon::open_datapath(
        interfaces, xdp_mode, pin_dir, engine,
    )?)
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers the default action (terminate) applies; the state is safe either way.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

//! The `edgekv` command: one subcommand per role, plus the client commands.
//!
//! This crate only reads flags, environment and config files and wires the role
//! crates together; all behaviour lives in those crates.
//!
//! # Layout
//! - [`cli`]: the command line (clap).
//! - [`config`]: the TOML config file, layered under environment and flags.
//! - [`dev`]: `edgekv dev`, every role in one process.
//! - [`roles`]: `edgekv origin`, `edgekv edge` and `edgekv control`.
//! - [`client`]: `edgekv kv ...`, a client of the KV API.
//! - [`ops`]: `edgekv build ...`, `edgekv deploy ...`, `edgekv token ...` and
//!   `edgekv break-glass ...`, clients of the control plane and of edges' admin
//!   listeners.
//! - [`bench`]: `edgekv bench`, a load generator for the KV API.

pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod dev;
pub mod ops;
pub mod roles;
pub mod workerd;

use std::process::ExitCode;

use cli::{Cli, Command};

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(&cli);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Bench(args) = &cli.command
        && let Some(threads) = args.threads
    {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(client::EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async move {
        let file = config::File::load(cli.config.as_deref())?;
        match cli.command {
            Command::Dev(args) => dev::run(args, &file).await,
            Command::Origin(args) => roles::origin(args, &file).await,
            Command::Edge(args) => roles::edge(*args, &file).await,
            Command::Kv(args) => client::run(args).await,
            Command::Control(args) => roles::control(args).await,
            Command::Build(args) => ops::build(args).await,
            Command::Deploy(args) => ops::deploy(args).await,
            Command::Token(args) => ops::token(args).await,
            Command::BreakGlass(args) => ops::break_glass(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = err
                .downcast_ref::<client::ClientError>()
                .map_or(client::EXIT_FAILURE, |e| e.exit_code);
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match cli.command {
        Command::Kv(_)
        | Command::Build(_)
        | Command::Deploy(_)
        | Command::Token(_)
        | Command::BreakGlass(_)
        | Command::Bench(_) => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGEKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        cli::LogFormat::Json => builder.json().try_init(),
        // No colour codes into files and pipes: only on a terminal.
        cli::LogFormat::Text => {
            use std::io::IsTerminal as _;
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .try_init()
        }
    };
}

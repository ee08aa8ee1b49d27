//! The `edgekv` binary: parses the command line and runs the chosen command.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = edgekv::cli::Cli::parse();
    edgekv::run(cli)
}

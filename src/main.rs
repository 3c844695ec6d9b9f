//! The `understudy` binary: parse flags, load the configuration, start tracing, then
//! serve or run an admin command.

use clap::Parser;
use understudy::cli::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Store(command) = cli.command {
        return match cli::run_store(command) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("understudy: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let config = match cli::load_config(cli.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("understudy: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let serving = matches!(cli.command, Command::Serve);
    let result = match cli.command {
        Command::Serve => {
            understudy::init_tracing(&config.log);
            understudy::memory::tune_allocator();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(understudy::run(config, cli.config.clone())))
        }
        command => cli::run_admin(&config, command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once: the server's log is stderr (journald) already.
            if serving {
                tracing::error!("{e:#}");
            } else {
                eprintln!("understudy: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

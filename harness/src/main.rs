//! The `promptloop` binary: parses the command line, installs logging, runs a subcommand.
//!
//! Exit codes: 0 success; 1 a run failed (engine, I/O); 2 bad input (arguments, task files,
//! model paths, an engine set-up such as `--engine server:URL` servers that serve another model
//! or do not answer at start). Errors name the file, line and field at fault.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose, args.quiet);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().filter_map(|e| e.downcast_ref::<std::io::Error>()).any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

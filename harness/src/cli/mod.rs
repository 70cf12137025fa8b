//! Command-line interface: clap definitions, logging set-up, exit codes.

mod bench;
mod calibrate;
mod compare;
mod engine_args;
mod eval;
mod init;
mod optimize;
mod report;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

/// promptloop: optimize prompts for small in-process models, measured.
#[derive(Debug, Parser)]
#[command(name = "promptloop", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace; `RUST_LOG` overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress bars; errors only (warnings and progress notes are dropped).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The folder that holds the datasets a task names with `data = "..."` (default: the
    /// `PROMPTLOOP_DATA` environment variable, else the nearest `shared/datasets` above the task).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_root: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 run failed (engine, I/O), 2 bad input \
(arguments, task files, model path, an engine set-up such as llama-servers that serve another model or do not answer at start).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate a prompt on one split of a task and print quality and speed.
    #[command(after_help = EXIT_CODES)]
    Eval(eval::EvalArgs),
    /// Optimize a task's prompt: propose, score on train, gate on dev, log to a run directory.
    Optimize(Box<optimize::OptimizeArgs>),
    /// Learn per-engine memory and latency against input length; write the routing table that
    /// `--engine auto` reads.
    #[command(after_help = EXIT_CODES)]
    Calibrate(calibrate::CalibrateArgs),
    /// Time one eval pass the seed's way (sequential requests to a llama-server) against
    /// promptloop's, twice (a cold pass, then a changed prompt), and print the ratio.
    #[command(after_help = EXIT_CODES)]
    Compare(compare::CompareArgs),
    /// Write a self-contained HTML report (or a Markdown summary) of an optimize run directory
    /// or of a routing table.
    #[command(after_help = EXIT_CODES)]
    Report(report::ReportArgs),
    /// (internal) One calibration probe, run by `calibrate` in a child process.
    #[command(hide = true)]
    Probe(calibrate::ProbeArgs),
    /// Measure prefill, decode, constraint, tokenizer, eval and scorer speed; save a baseline or
    /// compare with one (exit 3 when a metric is slower beyond --threshold).
    #[command(after_help = bench::EXIT_CODES)]
    Bench(bench::BenchArgs),
    /// Make a task directory from a JSONL or CSV file of examples (text + gold object): infer
    /// the schema and matchers, split train/dev/test, check it as `eval` would.
    #[command(after_help = EXIT_CODES)]
    Init(init::InitArgs),
}

/// Errors that mean "the user's input is wrong" (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(root) = &cli.data_root {
        // One setting for the whole process, read where tasks are loaded (and by the calibration
        // probes this process starts, which inherit it).
        let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
        std::env::set_var(harness::task::DATA_ROOT_ENV, root);
    }
    match cli.command {
        Command::Eval(args) => eval::run(&args, cli.quiet),
        Command::Optimize(args) => optimize::run(&args, cli.quiet),
        Command::Calibrate(args) => calibrate::run(&args, cli.quiet),
        Command::Compare(args) => compare::run(&args, cli.quiet),
        Command::Report(args) => report::run(&args),
        Command::Probe(args) => calibrate::probe(&args),
        Command::Bench(args) => bench::run(&args, cli.quiet),
        Command::Init(args) => init::run(&args, cli.quiet),
    }
}

pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(<dyn std::error::Error>::is::<bench::Regressed>) {
        return 3;
    }
    let input = err.chain().any(|e| {
        e.is::<InputError>()
            || e.is::<harness::task::TaskError>()
            || e.is::<harness::models::ModelError>()
            || e.downcast_ref::<harness::session::StartError>().is_some_and(harness::session::StartError::is_input)
            || e.downcast_ref::<harness::engine_setup::PrepareError>().is_some_and(harness::engine_setup::PrepareError::is_input)
    });
    if input {
        2
    } else {
        1
    }
}

/// Whether stderr is a terminal: progress bars are drawn only then.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Whether log lines on stderr carry ANSI colour: only on a terminal, and never when `NO_COLOR`
/// is set to a non-empty value (<https://no-color.org>).
pub fn stderr_colour() -> bool {
    colour_allowed(std::env::var_os("NO_COLOR").as_deref(), stderr_is_terminal())
}

fn colour_allowed(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// Installs the tracing subscriber on stderr; llama.cpp's own log lines arrive through it.
/// Colour follows [`stderr_colour`], so a log sent to a file or pipe is plain text.
pub fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // llama.cpp logs a lot at info; keep it one level quieter than ours.
    let llama = match level {
        "info" => "warn",
        l => l,
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},llama-cpp-2={llama},llama_cpp_2={llama}")));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(stderr_colour()).try_init();
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour_allowed;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(None, true));
        assert!(colour_allowed(Some(OsStr::new("")), true), "an empty NO_COLOR does not count");
        assert!(!colour_allowed(Some(OsStr::new("1")), true));
        assert!(!colour_allowed(Some(OsStr::new("0")), true), "any non-empty value turns colour off");
        assert!(!colour_allowed(None, false));
    }
}

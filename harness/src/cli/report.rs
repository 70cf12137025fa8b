//! `promptloop report PATH [--out FILE] [--format html|md]`: a self-contained HTML report (or a
//! Markdown summary) of an optimize run directory, or of a routing table (`.toml`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use harness::calibrate::RoutingTable;
use harness::report::{self, html, markdown, ReportError, Source};

use super::InputError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One HTML file: inline CSS and SVG plots, nothing fetched when opened.
    Html,
    /// A Markdown summary, for a pull request.
    Md,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run directory of `promptloop optimize` (or its run.jsonl), or a routing table (.toml)
    /// written by `promptloop calibrate`.
    pub path: PathBuf,
    /// Where to write it (`-` = stdout). Default: PATH/report.html (report.md) for a run
    /// directory; beside a routing table, its name with .html (.md).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "html")]
    pub format: Format,
    /// Routing table shown with the run's latency and memory (default: the model's table in
    /// the cache, when there is one).
    #[arg(long, value_name = "FILE")]
    pub routing: Option<PathBuf>,
}

fn input(e: ReportError) -> anyhow::Error {
    if e.is_input() {
        InputError(e.to_string()).into()
    } else {
        e.into()
    }
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let ext = match args.format {
        Format::Html => "html",
        Format::Md => "md",
    };
    let (text, default_out) = match report::source(&args.path).map_err(input)? {
        Source::Run(dir) => {
            let run = report::load_run(&dir).map_err(input)?;
            for w in &run.warnings {
                eprintln!("warning: {w}");
            }
            let routing = report::routing_for_run(&run, args.routing.as_deref()).map_err(input)?;
            let analysis = report::analyze(&run, routing);
            let text = match args.format {
                Format::Html => html::run_report(&run, &analysis),
                Format::Md => markdown::run_report(&run, &analysis),
            };
            (text, dir.join(format!("report.{ext}")))
        }
        Source::Table(path) => {
            let table = RoutingTable::load(&path).map_err(|e| input(e.into()))?;
            let text = match args.format {
                Format::Html => html::table_report(&path, &table),
                Format::Md => markdown::table_report(&path, &table),
            };
            (text, path.with_extension(ext))
        }
    };
    let out = args.out.clone().unwrap_or(default_out);
    if out == Path::new("-") {
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(());
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir)?;
    }
    fs_err::write(&out, text)?;
    println!("{}", out.display());
    Ok(())
}

//! `promptloop eval`: one pass of a prompt over one split, with a table or JSON summary, after
//! the task's eval-set health warnings (stderr; `health` in the JSON summary).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use harness::eval::{self, EvalSpec, ExampleRecord, PromptSpec, RecordSink};
use harness::summary::{Labels, Summary};
use harness::task::health::{self, HealthOptions};
use harness::task::Task;
use indicatif::{ProgressBar, ProgressStyle};

use harness::engine_setup::{constraint_schema, load_setup_engine};

use super::engine_args::EngineArgs;
use super::InputError;

/// The examples a pass runs on: `--task`, `--split`, `--limit` (`eval` and `compare`).
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Task directory (holds task.toml).
    #[arg(long)]
    pub task: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "dev")]
    pub split: String,
    /// Evaluate only the first N examples of the split.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub on: SplitArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Instruction prompt file to use instead of the task's.
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// Where the document goes instead of the task's `layout`: instruction-first or
    /// document-first (the document's KV state is then cached across passes).
    #[arg(long)]
    pub layout: Option<harness::task::Layout>,
    /// Print the summary as one JSON object (the last line on stdout).
    #[arg(long)]
    pub json: bool,
    /// Write one JSON record per example (output, verdicts, timings) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Records of an earlier pass (an `--out` file): each example's output there is the draft
    /// of its output here (see `--speculative`).
    #[arg(long, value_name = "FILE")]
    pub draft: Option<PathBuf>,
}

pub fn run(args: &EvalArgs, quiet: bool) -> anyhow::Result<()> {
    let task = Task::load(&args.on.task)?;
    let split = task.split(&args.on.split)?;
    let health = health::check(&task, &HealthOptions::default());
    if !quiet && !args.json {
        print_warnings(&health);
    }
    let examples = match args.on.limit {
        Some(n) => &split.examples[..n.min(split.examples.len())],
        None => &split.examples[..],
    };
    let instruction = match &args.prompt {
        Some(path) => read_prompt(path)?,
        None => task.prompt.clone(),
    };
    let validator = task.validator()?;
    let e = &args.engine;
    let (constraint_schema, bounds) = constraint_schema(&task, e.constraint, e.no_bounds)?;
    if let Some(about) = bounds.filter(|_| !quiet && !args.json) {
        eprintln!("{about}");
    }
    let model_path = harness::models::resolve(&e.model)?;
    let (setup, note) = e.setup_with_note()?;
    if let Some(note) = note.as_deref().filter(|_| !quiet && !args.json) {
        eprintln!("{note}");
    }
    let cfg = setup.engine_config(&model_path);
    let drafts = args.draft.as_deref().map(read_drafts).transpose()?;
    let engine = load_setup_engine(&setup, &cfg)?;
    let info = engine.info();

    let spec = EvalSpec {
        prompt: PromptSpec { instruction: &instruction, layout: args.layout.unwrap_or(task.layout), framing: &task.framing },
        fields: &task.fields,
        constraint: constraint_schema.as_ref(),
        validator: &validator,
        max_tokens: e.max_tokens.unwrap_or(task.max_tokens),
        overflow: e.on_overflow,
        drafts: drafts.as_ref(),
    };
    let mut sink = CliSink::new(args.out.as_deref(), quiet || args.json)?;
    let (records, wall_ms) = eval::run(engine.as_ref(), &spec, examples, &mut sink)
        .with_context(|| format!("writing {}", args.out.as_deref().unwrap_or(Path::new("-")).display()))?;

    let labels = Labels {
        task: &task.name,
        split: &split.name,
        model: &info.model_desc,
        engine: &format!(
            "{} ({}, {} threads, batch {})",
            info.kind, info.backend_version, info.threads, info.capabilities.max_batch
        ),
        constraint: &e.constraint.to_string(),
        kv_cache_bytes: info.kv_cache_bytes,
    };
    let summary = Summary::new(&labels, &task.fields, &records, wall_ms);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let mut json = serde_json::to_value(&summary)?;
        if let Some(map) = json.as_object_mut() {
            map.insert("health".into(), health.iter().map(health::Warning::to_json).collect());
        }
        writeln!(stdout, "{}", serde_json::to_string(&json)?)?;
    } else {
        write!(stdout, "{}", summary.table())?;
        if let Some(out) = &args.out {
            writeln!(stdout, "records         {}", out.display())?;
        }
    }
    Ok(())
}

/// The task's eval-set health warnings, one `warning:` line each on stderr.
pub(super) fn print_health(task: &Task) {
    print_warnings(&health::check(task, &HealthOptions::default()));
}

fn print_warnings(warnings: &[health::Warning]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// The outputs of an `eval --out` file by example id; a bad line is an input error naming it.
fn read_drafts(path: &Path) -> anyhow::Result<eval::Drafts> {
    let text = fs_err::read_to_string(path).map_err(|e| InputError(e.to_string()))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let rec: ExampleRecord = serde_json::from_str(line)
            .map_err(|e| InputError(format!("{}:{}:{}: not an eval record: {e}", path.display(), i + 1, e.column())))?;
        records.push(rec);
    }
    Ok(eval::drafts_from(&records))
}

pub(super) fn read_prompt(path: &Path) -> anyhow::Result<String> {
    let bytes = fs_err::read(path).map_err(|e| InputError(e.to_string()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| InputError(format!("{}: not UTF-8 (byte {})", path.display(), e.utf8_error().valid_up_to())))?;
    let text = text.trim_start_matches('\u{feff}').replace("\r\n", "\n");
    if text.trim().is_empty() {
        return Err(InputError(format!("{}: the prompt is empty", path.display())).into());
    }
    Ok(text)
}

/// Progress bar on a terminal, and the `--out` JSONL file written record by record.
struct CliSink {
    bar: Option<ProgressBar>,
    out: Option<BufWriter<fs_err::File>>,
}

impl CliSink {
    fn new(out: Option<&Path>, hide_bar: bool) -> anyhow::Result<Self> {
        let out = match out {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs_err::create_dir_all(dir)?;
                }
                Some(BufWriter::new(fs_err::File::create(path)?))
            }
            None => None,
        };
        let show = !hide_bar && super::stderr_is_terminal();
        Ok(Self { bar: show.then(ProgressBar::hidden), out })
    }
}

impl RecordSink for CliSink {
    fn start(&mut self, total: usize) {
        if let Some(bar) = &mut self.bar {
            *bar = ProgressBar::new(total as u64);
            let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
        }
    }

    fn record(&mut self, rec: &ExampleRecord) -> std::io::Result<()> {
        if let Some(out) = &mut self.out {
            serde_json::to_writer(&mut *out, rec)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
        if let Some(bar) = &self.bar {
            bar.set_message(format!("last score {:.2}", rec.score));
            bar.inc(1);
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

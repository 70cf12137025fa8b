//! `promptloop init DIR --from examples.jsonl`: a task directory from the user's own examples
//! (JSON Lines or CSV), checked as `eval` checks it, its eval-set health warnings (stderr), and
//! the commands that evaluate and optimize it. The work is done by `harness::init`.

use std::path::PathBuf;

use clap::Args;
use harness::init::{self, Fields, InitError, InitOptions, Sizes};
use harness::task::MatchRule;

use super::InputError;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The task directory to write (created when missing).
    pub dir: PathBuf,
    /// The examples: JSON Lines, one record per line, or a CSV file (`.csv`) whose gold column
    /// holds the gold object as JSON. Each field's matcher is inferred from its gold values:
    /// `number` for numbers and numeric text ("12.50", "$1,200"), `enum` for a few repeated
    /// values, `date` (with `day-first = true` when the gold dates read day first), `text` (word
    /// similarity, fuzzy = 0.8) for free text of several words such as names and addresses,
    /// `list` for arrays, `exact` for codes, ids and single words. Eval-set health warnings
    /// (labels missing from train, splits too small for the gate, texts in two splits, fields
    /// nearly always null) go to stderr. See docs/tasks.md.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Field (CSV: column) holding the input text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Field (CSV: column) holding the gold object.
    #[arg(long, default_value = "expected")]
    pub gold_field: String,
    /// Field (CSV: column) holding the id; records without one get ex-0001, ex-0002, ...
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// Use this JSON Schema (draft 2020-12) instead of inferring one; every gold object must
    /// satisfy it.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// How prompts introduce the document ("{label}:\n\n{text}"); "" for the text alone.
    #[arg(long, default_value = harness::task::DEFAULT_DOCUMENT_LABEL)]
    pub document_label: String,
    /// Train records (with --dev and --test; default: 60/20/20 of the records).
    #[arg(long, requires_all = ["dev", "test"])]
    pub train: Option<usize>,
    /// Dev records.
    #[arg(long, requires_all = ["train", "test"])]
    pub dev: Option<usize>,
    /// Test records.
    #[arg(long, requires_all = ["train", "dev"])]
    pub test: Option<usize>,
    /// Overwrite a task already in DIR.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &InitArgs, quiet: bool) -> anyhow::Result<()> {
    let sizes = match (args.train, args.dev, args.test) {
        (Some(train), Some(dev), Some(test)) => Some(Sizes { train, dev, test }),
        _ => None,
    };
    let opts = InitOptions {
        dir: args.dir.clone(),
        from: args.from.clone(),
        fields: Fields { text: args.text_field.clone(), gold: args.gold_field.clone(), id: args.id_field.clone() },
        schema: args.schema.clone(),
        document_label: args.document_label.clone(),
        sizes,
        force: args.force,
    };
    let report = init::init(&opts).map_err(|e| match e {
        InitError::Task(t) => anyhow::Error::from(t),
        e if e.is_input() => InputError(e.to_string()).into(),
        e => anyhow::Error::from(e),
    })?;
    if quiet {
        return Ok(());
    }
    let task = &report.task;
    let dir = args.dir.display();
    println!("wrote task `{}` to {dir} from {} records", task.name, report.records);
    let counts: Vec<String> = task.splits.values().map(|s| format!("{} {}", s.name, s.examples.len())).collect();
    match &report.stratified_by {
        Some(f) => println!("splits: {} (stratified by `{f}`)", counts.join(", ")),
        None => println!("splits: {}", counts.join(", ")),
    }
    let origin = if report.schema_given { "given" } else { "inferred" };
    println!("fields ({origin} schema):");
    for (plan, spec) in report.fields.iter().zip(&task.fields) {
        let order = if matches!(spec.rule, MatchRule::Date { day_first: true }) { " (day first)" } else { "" };
        println!("  {:<24} {:<32} match {}{order}", spec.name, init::describe(plan), spec.rule.name());
    }
    super::eval::print_health(task);
    println!("\nnext:");
    println!("  promptloop eval --task {dir} --split dev");
    println!("  promptloop optimize --task {dir} --out runs/{}", task.name);
    Ok(())
}

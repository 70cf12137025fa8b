//! `promptloop init`: a task directory from the user's own examples in one step.
//!
//! The input is a JSON Lines file of records, each with an input text and a gold object
//! (`{"id": .., "text": .., "expected": {..}}` by default; field names are configurable), or a
//! CSV file (`.csv`) with a text column and a column holding the gold object as JSON. From it
//! [`init`] writes a task as [`crate::task::Task::load`] reads it: `task.toml`, `schema.json`,
//! `prompt.txt` and `train.jsonl`, `dev.jsonl`, `test.jsonl`; then loads it back to check it.
//!
//! - The schema is inferred from the gold objects ([`infer`]), or given (`--schema`) and checked
//!   against every gold object. Inferred schemas require every field; a field that is absent
//!   from some gold objects is written as `null` there (and its type allows null).
//! - Each field gets a matcher in `task.toml` (see [`infer::Matcher`]).
//! - The split is deterministic ([`split`]): by a hash of each id, stratified by the most
//!   informative categorical field when there is one.

mod infer;
mod input;
mod split;
#[cfg(test)]
mod tests;
mod write;

use std::path::{Path, PathBuf};

pub use infer::{describe, FieldPlan, Matcher};
pub use input::{Fields, Record};
pub use split::Sizes;

use crate::task::{Task, TaskError};

/// What to build and from what.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The task directory to write (created when missing).
    pub dir: PathBuf,
    /// The examples: JSON Lines, or CSV when the name ends in `.csv`.
    pub from: PathBuf,
    pub fields: Fields,
    /// A JSON Schema to use instead of inferring one.
    pub schema: Option<PathBuf>,
    /// `document-label` of the new task.
    pub document_label: String,
    /// Split sizes; `None` = 60/20/20 of the records.
    pub sizes: Option<Sizes>,
    /// Overwrite an existing `task.toml`.
    pub force: bool,
}

/// What [`init`] wrote.
#[derive(Debug)]
pub struct InitReport {
    /// The loaded task (checked as `eval` checks it).
    pub task: Task,
    /// Records read from the input.
    pub records: usize,
    /// One entry per field, in schema order.
    pub fields: Vec<FieldPlan>,
    /// Whether the schema came from `--schema`.
    pub schema_given: bool,
    /// The field the split was stratified by, if any.
    pub stratified_by: Option<String>,
    /// Files written, in order.
    pub written: Vec<PathBuf>,
}

/// Why a task could not be made. Every input error names `file:line` and the field.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The input file could not be read (the I/O error names the path).
    #[error("cannot read the examples: {0}")]
    Read(std::io::Error),
    #[error("{}:{line}: not valid UTF-8", .path.display())]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{}:{line}:{column}: malformed JSON: {message}", .path.display())]
    Json { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{}:{line}: expected a JSON object (a record), found {found}", .path.display())]
    NotObject { path: PathBuf, line: usize, found: &'static str },
    #[error("{}:{line}: missing field `{field}`{hint}", .path.display())]
    MissingField { path: PathBuf, line: usize, field: String, hint: String },
    #[error("{}:{line}: field `{field}` must be {expected}, found {found}", .path.display())]
    BadField { path: PathBuf, line: usize, field: String, expected: &'static str, found: &'static str },
    #[error("{}:{line}: field `{field}` (the gold answer) must be a JSON object, found {found}", .path.display())]
    GoldNotObject { path: PathBuf, line: usize, field: String, found: &'static str },
    #[error("{}:{line}: column `{field}` is not valid JSON: {message}", .path.display())]
    CellJson { path: PathBuf, line: usize, field: String, message: String },
    #[error("{}:{line}: {message}", .path.display())]
    Csv { path: PathBuf, line: usize, message: String },
    #[error("{}:{line}: duplicate id `{id}` (first at line {first_line})", .path.display())]
    DuplicateId { path: PathBuf, line: usize, id: String, first_line: usize },
    #[error("{}:1: the file holds no records", .path.display())]
    Empty { path: PathBuf },
    /// A gold field holds values of two JSON types (null aside).
    #[error("{}:{line}: gold field `{field}` is {found} here but {first} at line {first_line}; one field needs one type (null aside)", .path.display())]
    Conflict { path: PathBuf, line: usize, field: String, found: &'static str, first: &'static str, first_line: usize },
    /// A gold object does not satisfy the `--schema`.
    #[error("{}:{line}: gold object does not match {} at `{pointer}`: {message}", .path.display(), .schema.display())]
    GoldInvalid { path: PathBuf, line: usize, schema: PathBuf, pointer: String, message: String },
    #[error("{}: {message}", .path.display())]
    Split { path: PathBuf, message: String },
    #[error("--document-label: {0}")]
    Label(String),
    #[error("{}: a task is already there; pass --force to overwrite it", .path.display())]
    Exists { path: PathBuf },
    /// The `--schema` file (or, should it happen, the written task) is not a usable task part.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// Writing the task failed.
    #[error("cannot write the task: {0}")]
    Write(std::io::Error),
}

impl InitError {
    /// Whether the error is about the user's input (exit code 2) rather than the machine.
    pub fn is_input(&self) -> bool {
        !matches!(self, InitError::Write(_))
    }
}

/// Reads the examples, builds and writes the task, and loads it back.
pub fn init(opts: &InitOptions) -> Result<InitReport, InitError> {
    let toml_path = opts.dir.join("task.toml");
    if toml_path.exists() && !opts.force {
        return Err(InitError::Exists { path: toml_path });
    }
    crate::task::Framing::new(opts.document_label.as_str()).map_err(InitError::Label)?;
    let records = input::read(&opts.from, &opts.fields)?;
    let (plan, schema_text, order) = if let Some(path) = &opts.schema {
        let (schema, order) = crate::task::load_schema(path)?;
        let text = fs_err::read_to_string(path).map_err(InitError::Read)?;
        check_against(&schema, path, &records, &opts.from)?;
        (infer::plans_from_schema(&schema, &order), text, order)
    } else {
        let plan = infer::infer(&records, &opts.from)?;
        let order: Vec<String> = plan.iter().map(|f| f.name.clone()).collect();
        let text = infer::schema_text(&plan, &name_of(&opts.dir));
        (plan, text, order)
    };
    let fill_nulls = opts.schema.is_none();
    let stratum = split::stratum_field(&plan, &records);
    let assignment = split::assign(&records, opts.sizes, stratum.as_deref(), &opts.from)?;

    fs_err::create_dir_all(&opts.dir).map_err(InitError::Write)?;
    let files = write::Files {
        name: name_of(&opts.dir),
        from: &opts.from,
        records: &records,
        plan: &plan,
        order: &order,
        fill_nulls,
        schema_given: opts.schema.is_some(),
        document_label: &opts.document_label,
    };
    let written = files.write(&opts.dir, &schema_text, &assignment)?;

    let task = Task::load(&opts.dir)?;
    task.validator()?;
    Ok(InitReport {
        task,
        records: records.len(),
        fields: plan,
        schema_given: opts.schema.is_some(),
        stratified_by: stratum,
        written,
    })
}

/// Every gold object against the user's schema.
fn check_against(schema: &serde_json::Value, schema_path: &Path, records: &[Record], from: &Path) -> Result<(), InitError> {
    let validator = crate::task::compile_schema(schema, schema_path)?;
    for r in records {
        let gold = serde_json::Value::Object(r.gold.clone());
        let first = validator.iter_errors(&gold).next().map(|err| (err.instance_path().as_str().to_owned(), err.to_string()));
        if let Some((pointer, message)) = first {
            return Err(InitError::GoldInvalid {
                path: from.to_path_buf(),
                line: r.line,
                schema: schema_path.to_path_buf(),
                pointer: if pointer.is_empty() { "(root)".into() } else { pointer },
                message: crate::task::read::shorten(&message, 300),
            });
        }
    }
    Ok(())
}

/// The task name: the directory's name.
fn name_of(dir: &Path) -> String {
    std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "task".to_owned())
}

//! [`TaskError`]: everything that can be wrong with a task directory.
//!
//! Every message names the file (full path), the line (and column where the parser gives one)
//! and the field or key at fault, in the `path:line:column: message` form that editors and
//! terminals turn into links.

use std::fmt;
use std::path::PathBuf;

/// Why a task could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A file could not be read (missing, a directory, no permission, ...).
    ///
    /// The I/O error comes from `fs-err` and already names the path.
    #[error("cannot read the {what}: {error}")]
    Read { what: &'static str, path: PathBuf, error: std::io::Error },

    /// A text file holds bytes that are not UTF-8.
    #[error("{}:{line}:{column}: the {what} is not valid UTF-8 (bad byte at column {column})", .path.display())]
    NotUtf8 {
        what: &'static str,
        path: PathBuf,
        line: usize,
        /// 1-based byte column of the first bad byte.
        column: usize,
    },

    /// `task.toml` does not parse or does not fit the task format: a syntax error, an unknown
    /// key, a missing key, a value of the wrong type.
    #[error("{}{}: {message}", .path.display(), Pos(*.line, *.column))]
    Toml { path: PathBuf, line: Option<usize>, column: Option<usize>, message: String },

    /// `task.toml` parses but a value in it is not allowed (a rule for a field the schema does
    /// not have, a `list` rule on a non-array field, a headroom below 1, ...).
    #[error("{}{}: `{field}`: {message}", .path.display(), Pos(*.line, None))]
    Config {
        path: PathBuf,
        line: Option<usize>,
        /// The key at fault, dotted as in TOML: `fields.parties.fuzzy`, `bounds.headroom`.
        field: String,
        message: String,
    },

    /// The schema file is not JSON.
    #[error("{}:{line}:{column}: the schema is not valid JSON: {message}", .path.display())]
    SchemaJson { path: PathBuf, line: usize, column: usize, message: String },

    /// The schema is JSON but not a valid JSON Schema (draft 2020-12).
    #[error("{}: not a valid JSON Schema (draft 2020-12) at `{}`: {message}", .path.display(), ShowPointer(.pointer))]
    SchemaInvalid {
        path: PathBuf,
        /// JSON pointer into the schema document.
        pointer: String,
        message: String,
    },

    /// The schema is valid but not usable for a task: the top level must be an object schema
    /// with `properties`.
    #[error("{}: `{field}`: {message}", .path.display())]
    SchemaShape { path: PathBuf, field: String, message: String },

    /// The prompt file is empty or only whitespace.
    #[error("{}:1: the prompt is empty", .path.display())]
    PromptEmpty { path: PathBuf },

    /// A line of a split file is not JSON.
    #[error("{}:{line}:{column}: malformed JSON: {message}", .path.display())]
    JsonLine { path: PathBuf, line: usize, column: usize, message: String },

    /// A line of a split file is JSON but not an object.
    #[error("{}:{line}: expected a JSON object with `id`, `text` and `expected`, found {found}", .path.display())]
    NotObject { path: PathBuf, line: usize, found: &'static str },

    /// An example lacks one of `id`, `text`, `expected`.
    #[error("{}:{line}: missing key `{key}`", .path.display())]
    MissingKey { path: PathBuf, line: usize, key: &'static str },

    /// An example's `id` is not a non-empty string.
    #[error("{}:{line}: `id` {problem}", .path.display())]
    BadId { path: PathBuf, line: usize, problem: String },

    /// An example's `text` is not a string.
    #[error("{}:{line}: `text` of example `{id}` must be a string, found {found}", .path.display())]
    BadText { path: PathBuf, line: usize, id: String, found: &'static str },

    /// The same id twice in one split file.
    #[error("{}:{line}: duplicate id `{id}` (first at line {first_line})", .path.display())]
    DuplicateId { path: PathBuf, line: usize, id: String, first_line: usize },

    /// The same id in two splits: a document in train and dev/test leaks the answer.
    #[error(
        "{}:{line}: id `{id}` of split `{split}` is also in split `{}` at {}:{} (leakage between splits)",
        .path.display(), .other.split, .other.path.display(), .other.line
    )]
    SplitLeak {
        path: PathBuf,
        line: usize,
        id: String,
        split: String,
        /// Where the id was seen first.
        other: Box<ExampleSite>,
    },

    /// An example's `expected` does not satisfy the task schema.
    #[error(
        "{}:{line}: `expected` of example `{id}` does not match the schema at `{}`: {message}",
        .path.display(), ShowPointer(.pointer)
    )]
    ExpectedInvalid {
        path: PathBuf,
        line: usize,
        id: String,
        /// JSON pointer into `expected`, e.g. `/parties/0`.
        pointer: String,
        message: String,
    },

    /// A split file holds no examples (only blank lines, or nothing).
    #[error("{}: split `{split}` has no examples", .path.display())]
    EmptySplit { path: PathBuf, split: String },

    /// [`crate::task::Task::split`] was asked for a split the task does not have.
    #[error("task `{task}` has no split `{name}`; available: {}", .available.join(", "))]
    UnknownSplit { task: String, name: String, available: Vec<String> },
}

/// Where an example sits: its split, file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleSite {
    pub split: String,
    pub path: PathBuf,
    pub line: usize,
}

/// `:line:column`, `:line`, or nothing.
struct Pos(Option<usize>, Option<usize>);

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}"),
            (Some(line), None) => write!(f, ":{line}"),
            (None, _) => Ok(()),
        }
    }
}

/// A JSON pointer, with the empty pointer (the whole document) shown as `(root)`.
struct ShowPointer<'a>(&'a str);

impl fmt::Display for ShowPointer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(root)")
        } else {
            f.write_str(self.0)
        }
    }
}

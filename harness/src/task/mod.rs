//! Tasks: a directory `evals/<name>/` with `task.toml`, a JSON Schema of the expected output,
//! an instruction prompt and JSON Lines splits. [`Task::load`] reads and checks all of it, so
//! that later stages can trust every example.
//!
//! ```toml
//! name = "cuad-mini"            # optional, default = directory name
//! schema = "schema.json"        # JSON Schema (draft 2020-12) of `expected`
//! prompt = "prompt.txt"
//! max-tokens = 256              # optional
//! layout = "instruction-first"  # or "document-first"
//! document-label = "Invoice"    # optional, default "Document"; "" = no head
//! data = "cuad"                 # optional: splits read from <data root>/cuad/, see `data`
//! clip-chars = 4000             # optional: each text cut to its first 4000 characters
//!
//! [splits]
//! train = "train.jsonl"
//! dev = "dev.jsonl"
//!
//! [bounds]                      # optional, see `crate::bounds`
//! headroom = 1.5
//!
//! [fields.parties]              # optional per-field match rules
//! match = "list"
//! fuzzy = 0.85
//!
//! [fields.adults]
//! sparse = true                 # null answer to null gold not scored (see `FieldSpec::sparse`)
//!
//! [fields.signed]
//! match = "date"
//! day-first = true              # 03/04/2020 is 3 April; default: from the gold dates
//!
//! [fields.address]
//! match = "text"                # word-level similarity, 0 below `fuzzy`
//! fuzzy = 0.8
//! ```
//!
//! Paths are relative to the task directory (absolute paths work too). Keys are kebab-case and
//! unknown keys are errors. Files may use CRLF line endings and start with a UTF-8 BOM.

mod config;
mod data;
mod error;
mod framing;
pub mod health;
mod jsonl;
pub(crate) mod read;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use config::{DEFAULT_FUZZY, DEFAULT_MAX_TOKENS, DEFAULT_TEXT_FUZZY, DEFAULT_TOLERANCE};
pub use data::DATA_ROOT_ENV;
pub use error::{ExampleSite, TaskError};
pub use framing::{Framing, DEFAULT_DOCUMENT_LABEL};

use config::{bounds_config, date_orders, field_specs, toml_error, RawTask, TomlDoc};
use read::{read_text, shorten};

/// A loaded and checked task.
#[derive(Debug, Clone)]
pub struct Task {
    /// `name` from `task.toml`, else the directory name.
    pub name: String,
    /// `description` from `task.toml`, if any.
    pub description: Option<String>,
    /// The task directory, absolute.
    pub dir: PathBuf,
    /// The JSON Schema of `expected` (and of the model output).
    pub schema: Value,
    pub schema_path: PathBuf,
    /// The initial instruction prompt, with CRLF turned into LF.
    pub prompt: String,
    pub prompt_path: PathBuf,
    /// Output token cap per example.
    pub max_tokens: u32,
    pub layout: Layout,
    /// How the document is introduced in prompts (`document-label`).
    pub framing: Framing,
    pub bounds: BoundsConfig,
    /// One entry per schema property, in schema order.
    pub fields: Vec<FieldSpec>,
    pub splits: BTreeMap<String, Split>,
    /// The dataset folder the splits read from (`data = "..."` under the data root), if any.
    pub data: Option<PathBuf>,
}

/// Where the document goes relative to the instruction in the model's prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    #[default]
    InstructionFirst,
    DocumentFirst,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::InstructionFirst => "instruction-first",
            Layout::DocumentFirst => "document-first",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "instruction-first" => Ok(Layout::InstructionFirst),
            "document-first" => Ok(Layout::DocumentFirst),
            other => Err(format!("unknown layout `{other}` (expected instruction-first or document-first)")),
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one output field is scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    pub rule: MatchRule,
    /// A sparse field (`sparse = true`): a null answer to a null gold value is not scored, so
    /// answering null everywhere earns nothing on it; a value where the gold is null still
    /// scores 0. For slot fields that are null in most records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
}

/// The matcher for a field; see `crate::score`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "match", rename_all = "kebab-case")]
pub enum MatchRule {
    /// Normalised text equality (case, whitespace, punctuation, quotes ignored).
    Exact,
    /// Dates compared as ISO `YYYY-MM-DD` after normalisation; exact otherwise. Numeric dates
    /// (`03/04/2020`) are read day first when `day_first`, else month first.
    Date {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        day_first: bool,
    },
    /// Trimmed, case-folded string equality.
    Enum,
    /// Numeric equality within an absolute tolerance.
    Number { tolerance: f64 },
    /// Set F1 over items, items matched by name similarity >= `fuzzy`.
    List { fuzzy: f64 },
    /// Free text (names, addresses): the word-level similarity of the two texts when it is at
    /// least `fuzzy`, else 0 (see `crate::score::matchers::text_similarity`).
    Text { fuzzy: f64 },
}

impl MatchRule {
    /// The `match = "..."` name.
    pub fn name(&self) -> &'static str {
        match self {
            MatchRule::Exact => "exact",
            MatchRule::Date { .. } => "date",
            MatchRule::Enum => "enum",
            MatchRule::Number { .. } => "number",
            MatchRule::List { .. } => "list",
            MatchRule::Text { .. } => "text",
        }
    }
}

/// One split: the examples of one JSONL file, in file order.
#[derive(Debug, Clone)]
pub struct Split {
    pub name: String,
    pub path: PathBuf,
    pub examples: Vec<Example>,
}

/// One example: a document and the expected extraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub id: String,
    pub text: String,
    pub expected: Value,
    /// 1-based line in the split file.
    pub line: usize,
}

/// The `[bounds]` table: schema hardening from gold values, see `crate::bounds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BoundsConfig {
    pub enabled: bool,
    /// Which gold value the bound starts from: the nearest-rank quantile of the observed counts
    /// and lengths (1.0 = the maximum). Gold values are heavy-tailed (a few filings list a dozen
    /// signatories), and a bound sized for the outlier leaves a small model room to loop.
    pub quantile: f64,
    /// Factor on the observed quantile.
    pub headroom: f64,
    /// Smallest `maxLength` ever set.
    pub min_max_length: u32,
    /// The split whose gold values give the bounds.
    pub from_split: String,
}

impl Default for BoundsConfig {
    fn default() -> Self {
        BoundsConfig { enabled: true, quantile: 0.9, headroom: 1.5, min_max_length: 24, from_split: "train".into() }
    }
}

impl Task {
    /// Loads `dir/task.toml` and everything it names, checking all of it.
    ///
    /// `dir` may also be the path of a `task.toml` file. Without a `[bounds]` table, bounds are
    /// on when the task has a `train` split and off otherwise.
    pub fn load(dir: &Path) -> Result<Task, TaskError> {
        let given = std::path::absolute(dir).map_err(|error| TaskError::Read {
            what: "task directory",
            path: dir.to_path_buf(),
            error,
        })?;
        let (dir, toml_path) = if given.is_file() {
            let parent = given.parent().map_or_else(|| given.clone(), Path::to_path_buf);
            (parent, given)
        } else {
            (given.clone(), given.join("task.toml"))
        };
        let toml_text = read_text(&toml_path, "task file")?;
        let raw: RawTask = toml::from_str(&toml_text).map_err(|err| toml_error(&toml_path, &toml_text, &err))?;
        let doc = TomlDoc { path: &toml_path, text: &toml_text };

        let name = match &raw.name {
            Some(name) if name.get_ref().trim().is_empty() => {
                return Err(doc.error(Some(name.span()), "name", "must not be empty".into()));
            }
            Some(name) => name.get_ref().clone(),
            None => dir.file_name().map_or_else(|| "task".to_owned(), |n| n.to_string_lossy().into_owned()),
        };
        let max_tokens = match &raw.max_tokens {
            Some(max) if *max.get_ref() == 0 => {
                return Err(doc.error(Some(max.span()), "max-tokens", "must be at least 1".into()));
            }
            Some(max) => *max.get_ref(),
            None => DEFAULT_MAX_TOKENS,
        };
        let framing = match &raw.document_label {
            Some(label) => Framing::new(label.get_ref().as_str())
                .map_err(|message| doc.error(Some(label.span()), "document-label", message))?,
            None => Framing::default(),
        };
        if raw.splits.get_ref().is_empty() {
            return Err(doc.error(
                Some(raw.splits.span()),
                "splits",
                "needs at least one split, e.g. `dev = \"dev.jsonl\"`".into(),
            ));
        }
        let split_names: Vec<&str> = raw.splits.get_ref().keys().map(String::as_str).collect();
        let bounds = bounds_config(raw.bounds.as_ref(), &split_names, &doc)?;

        let schema_path = dir.join(raw.schema.get_ref());
        let (schema, properties_order) = load_schema(&schema_path)?;
        let validator = compile_schema(&schema, &schema_path)?;
        let properties = schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut fields = field_specs(&properties, &properties_order, &raw.fields, &doc)?;

        let prompt_path = dir.join(raw.prompt.get_ref());
        let prompt = read_text(&prompt_path, "prompt")?.replace("\r\n", "\n");
        if prompt.trim().is_empty() {
            return Err(TaskError::PromptEmpty { path: prompt_path });
        }

        let data = match &raw.data {
            Some(name) => {
                Some(data::dataset_dir(name.get_ref(), &dir).map_err(|message| doc.error(Some(name.span()), "data", message))?)
            }
            None => None,
        };
        let mut splits = load_splits(&raw, &dir, data.as_deref(), &properties_order, &validator, &doc)?;
        if let Some(clip) = &raw.clip_chars {
            if *clip.get_ref() == 0 {
                return Err(doc.error(Some(clip.span()), "clip-chars", "must be at least 1".into()));
            }
            let max = *clip.get_ref() as usize;
            for example in splits.values_mut().flat_map(|s| s.examples.iter_mut()) {
                if let Some((cut, _)) = example.text.char_indices().nth(max) {
                    example.text.truncate(cut);
                }
            }
        }
        check_leakage(&splits)?;
        date_orders(&mut fields, &raw.fields, &splits);

        Ok(Task {
            name,
            description: raw.description,
            dir,
            schema,
            schema_path,
            prompt,
            prompt_path,
            max_tokens,
            layout: raw.layout.unwrap_or_default(),
            framing,
            bounds,
            fields,
            splits,
            data,
        })
    }

    /// The split called `name`; the error lists the available ones.
    pub fn split(&self, name: &str) -> Result<&Split, TaskError> {
        self.splits.get(name).ok_or_else(|| TaskError::UnknownSplit {
            task: self.name.clone(),
            name: name.to_owned(),
            available: self.splits.keys().cloned().collect(),
        })
    }

    /// The field rule for `name`, if the schema has that property.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// A validator for the task schema (for scoring model outputs).
    pub fn validator(&self) -> Result<jsonschema::Validator, TaskError> {
        compile_schema(&self.schema, &self.schema_path)
    }
}

/// Compiles `schema` (draft 2020-12); `path` names it in errors.
///
/// Use it for a hardened copy of a task schema too (see `crate::bounds`).
pub fn compile_schema(schema: &Value, path: &Path) -> Result<jsonschema::Validator, TaskError> {
    jsonschema::draft202012::new(schema).map_err(|err| TaskError::SchemaInvalid {
        path: path.to_path_buf(),
        pointer: err.schema_path().as_str().to_owned(),
        message: shorten(&err.to_string(), 300),
    })
}

/// Reads and checks the schema; returns it with its property names in document order.
pub(crate) fn load_schema(path: &Path) -> Result<(Value, Vec<String>), TaskError> {
    let text = read_text(path, "schema")?;
    let schema: Value = serde_json::from_str(&text).map_err(|err| {
        let message = err.to_string();
        let message = message.rfind(" at line ").map_or(message.as_str(), |cut| &message[..cut]);
        TaskError::SchemaJson { path: path.to_path_buf(), line: err.line(), column: err.column(), message: message.to_owned() }
    })?;
    if let Err(err) = jsonschema::draft202012::meta::validate(&schema) {
        return Err(TaskError::SchemaInvalid {
            path: path.to_path_buf(),
            pointer: err.instance_path().as_str().to_owned(),
            message: shorten(&err.to_string(), 300),
        });
    }
    let shape =
        |field: &str, message: String| TaskError::SchemaShape { path: path.to_path_buf(), field: field.to_owned(), message };
    let Value::Object(top) = &schema else {
        return Err(shape("(root)", "the schema must be an object schema (`\"type\": \"object\"` with `properties`)".into()));
    };
    match top.get("type") {
        None => {}
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => {
            return Err(shape("type", format!("the top level must be `\"object\"`, found {other}")));
        }
    }
    let properties = match top.get("properties") {
        Some(Value::Object(props)) if !props.is_empty() => props,
        Some(Value::Object(_)) => return Err(shape("properties", "the schema has no properties".into())),
        _ => return Err(shape("properties", "the top level needs `properties`, one per output field".into())),
    };
    let mut order: Vec<String> = read::property_order(&text).into_iter().filter(|k| properties.contains_key(k)).collect();
    for key in properties.keys() {
        if !order.contains(key) {
            order.push(key.clone());
        }
    }
    Ok((schema, order))
}

/// Reads every split, in the order `task.toml` writes them: from the task directory, or from the
/// dataset folder `data` (then `expected` keeps the schema's properties, and a record an earlier
/// split took is not taken again).
fn load_splits(
    raw: &RawTask,
    dir: &Path,
    data: Option<&Path>,
    properties: &[String],
    validator: &jsonschema::Validator,
    doc: &TomlDoc<'_>,
) -> Result<BTreeMap<String, Split>, TaskError> {
    let base = data.unwrap_or(dir);
    let keep = data.map(|_| properties);
    let mut written: Vec<(&String, &toml::Spanned<toml::Value>)> = raw.splits.get_ref().iter().collect();
    written.sort_by_key(|(_, v)| v.span().start);
    let mut taken: HashSet<String> = HashSet::new();
    let mut splits = BTreeMap::new();
    for (split_name, value) in written {
        if split_name.trim().is_empty() {
            return Err(doc.error(Some(value.span()), "splits", "a split name must not be empty".into()));
        }
        let source = data::SplitSource::parse(split_name, value, doc)?;
        let mut files = Vec::new();
        for file in source.files() {
            files.push(jsonl::load_split(split_name, base.join(file), validator, keep)?);
        }
        let split = match source {
            data::SplitSource::File(_) => files.remove(0),
            data::SplitSource::Select(sel) => {
                let path = files[0].path.clone();
                let records = files.into_iter().map(|f| f.examples).collect();
                let examples = data::select(&sel, records, &taken, |e: &Example| e.id.as_str(), |e| e.text.chars().count());
                if examples.is_empty() {
                    return Err(TaskError::EmptySplit { path, split: split_name.clone() });
                }
                Split { name: split_name.clone(), path, examples }
            }
        };
        taken.extend(split.examples.iter().map(|e| e.id.clone()));
        splits.insert(split_name.clone(), split);
    }
    Ok(splits)
}

/// Fails when one id is in two splits.
fn check_leakage(splits: &BTreeMap<String, Split>) -> Result<(), TaskError> {
    let mut seen: HashMap<&str, (&Split, usize)> = HashMap::new();
    for split in splits.values() {
        for example in &split.examples {
            if let Some((other, other_line)) = seen.get(example.id.as_str()) {
                return Err(TaskError::SplitLeak {
                    path: split.path.clone(),
                    line: example.line,
                    id: example.id.clone(),
                    split: split.name.clone(),
                    other: Box::new(ExampleSite { split: other.name.clone(), path: other.path.clone(), line: *other_line }),
                });
            }
            seen.insert(&example.id, (split, example.line));
        }
    }
    Ok(())
}

//! Reading one split file: JSON Lines of `{"id", "text", "expected"}`, each checked against the
//! task schema. Blank lines are skipped, CRLF and a leading BOM are accepted, and line numbers
//! in errors are those of the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::read::{json_type, read_bytes, shorten, BOM};
use super::{Example, Split, TaskError};

/// Longest validator message kept in an error (they can quote whole documents).
const MAX_MESSAGE_CHARS: usize = 300;

/// Loads and checks the split `name` from `path`. With `keep`, each `expected` object keeps only
/// those keys before it is checked (a task scoring some of a dataset's fields).
pub(super) fn load_split(
    name: &str,
    path: PathBuf,
    validator: &jsonschema::Validator,
    keep: Option<&[String]>,
) -> Result<Split, TaskError> {
    let bytes = read_bytes(&path, "split file")?;
    let mut examples = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let raw = if index == 0 { raw.strip_prefix(BOM).unwrap_or(raw) } else { raw };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|err| TaskError::NotUtf8 {
            what: "split file",
            path: path.clone(),
            line,
            column: err.valid_up_to() + 1,
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let example = parse_line(text, line, &path, validator, keep)?;
        if let Some(&first_line) = seen.get(&example.id) {
            return Err(TaskError::DuplicateId { path, line, id: example.id, first_line });
        }
        seen.insert(example.id.clone(), line);
        examples.push(example);
    }
    if examples.is_empty() {
        return Err(TaskError::EmptySplit { path, split: name.to_owned() });
    }
    Ok(Split { name: name.to_owned(), path, examples })
}

/// Parses and checks one non-blank line.
fn parse_line(
    text: &str,
    line: usize,
    path: &Path,
    validator: &jsonschema::Validator,
    keep: Option<&[String]>,
) -> Result<Example, TaskError> {
    let value: Value = serde_json::from_str(text).map_err(|err| TaskError::JsonLine {
        path: path.to_path_buf(),
        line,
        column: err.column(),
        message: strip_serde_position(&err),
    })?;
    let Value::Object(mut object) = value else {
        return Err(TaskError::NotObject { path: path.to_path_buf(), line, found: json_type(&value) });
    };
    let missing = |key| TaskError::MissingKey { path: path.to_path_buf(), line, key };
    let id = match object.remove("id").ok_or_else(|| missing("id"))? {
        Value::String(id) if id.trim().is_empty() => {
            return Err(TaskError::BadId { path: path.to_path_buf(), line, problem: "is empty".into() })
        }
        Value::String(id) => id,
        other => {
            return Err(TaskError::BadId {
                path: path.to_path_buf(),
                line,
                problem: format!("must be a string, found {}", json_type(&other)),
            })
        }
    };
    let text = match object.remove("text").ok_or_else(|| missing("text"))? {
        Value::String(text) => text,
        other => return Err(TaskError::BadText { path: path.to_path_buf(), line, id, found: json_type(&other) }),
    };
    let mut expected = object.remove("expected").ok_or_else(|| missing("expected"))?;
    if let (Some(keep), Value::Object(fields)) = (keep, &mut expected) {
        fields.retain(|k, _| keep.contains(k));
    }
    if let Some(err) = validator.iter_errors(&expected).next() {
        return Err(TaskError::ExpectedInvalid {
            path: path.to_path_buf(),
            line,
            id,
            pointer: err.instance_path().as_str().to_owned(),
            message: shorten(&err.to_string(), MAX_MESSAGE_CHARS),
        });
    }
    Ok(Example { id, text, expected, line })
}

/// `serde_json`'s message without its " at line 1 column N" tail (we report our own line).
fn strip_serde_position(err: &serde_json::Error) -> String {
    let message = err.to_string();
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message,
    }
}

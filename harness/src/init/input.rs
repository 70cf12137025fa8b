//! Reading the examples `init` starts from: JSON Lines records or CSV rows, each with an id
//! (optional), an input text and a gold object. Line numbers are those of the file (a CSV
//! row's first line); blank JSONL lines are skipped, CRLF and a leading BOM are accepted.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::InitError;
use crate::task::read::{json_type, member_keys, object_keys};

/// Which fields (JSONL) or columns (CSV) hold what.
#[derive(Debug, Clone)]
pub struct Fields {
    pub text: String,
    pub gold: String,
    /// Where ids are; a record without it gets `ex-0001`, `ex-0002`, ... (by record number).
    pub id: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields { text: "text".into(), gold: "expected".into(), id: "id".into() }
    }
}

/// One example as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based line in the input file.
    pub line: usize,
    pub id: String,
    pub text: String,
    pub gold: Map<String, Value>,
    /// The gold object's keys in the order the file gives them.
    pub keys: Vec<String>,
}

/// Reads `path` (CSV when its name ends in `.csv`, JSON Lines otherwise).
pub fn read(path: &Path, fields: &Fields) -> Result<Vec<Record>, InitError> {
    let bytes = fs_err::read(path).map_err(InitError::Read)?;
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let records = if is_csv { read_csv(path, &bytes, fields)? } else { read_jsonl(path, &bytes, fields)? };
    if records.is_empty() {
        return Err(InitError::Empty { path: path.to_path_buf() });
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        if let Some(&first_line) = seen.get(r.id.as_str()) {
            return Err(InitError::DuplicateId { path: path.to_path_buf(), line: r.line, id: r.id.clone(), first_line });
        }
        seen.insert(&r.id, r.line);
    }
    Ok(records)
}

fn read_jsonl(path: &Path, bytes: &[u8], fields: &Fields) -> Result<Vec<Record>, InitError> {
    let mut records = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let raw = if index == 0 { raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw) } else { raw };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| InitError::NotUtf8 { path: path.to_path_buf(), line })?;
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text).map_err(|err| InitError::Json {
            path: path.to_path_buf(),
            line,
            column: err.column(),
            message: strip_position(&err),
        })?;
        let Value::Object(mut object) = value else {
            return Err(InitError::NotObject { path: path.to_path_buf(), line, found: json_type(&value) });
        };
        let missing = |field: &str, object: &Map<String, Value>| {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            InitError::MissingField {
                path: path.to_path_buf(),
                line,
                field: field.to_owned(),
                hint: format!(" (the record has {}; see --text-field, --gold-field)", keys.join(", ")),
            }
        };
        let text_value = object.remove(&fields.text).ok_or_else(|| missing(&fields.text, &object))?;
        let gold = object.remove(&fields.gold).ok_or_else(|| missing(&fields.gold, &object))?;
        let id = object.remove(&fields.id);
        let keys = member_keys(text, &fields.gold);
        records.push(record(path, line, records.len() + 1, id, text_value, gold, keys, fields)?);
    }
    Ok(records)
}

fn read_csv(path: &Path, bytes: &[u8], fields: &Fields) -> Result<Vec<Record>, InitError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let csv_error = |err: &csv::Error| InitError::Csv {
        path: path.to_path_buf(),
        line: err.position().map_or(1, |p| p.line() as usize),
        message: err.to_string(),
    };
    let headers = reader.headers().map_err(|e| csv_error(&e))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let columns: Vec<&str> = headers.iter().collect();
    let need = |name: &str| {
        column(name).ok_or_else(|| InitError::MissingField {
            path: path.to_path_buf(),
            line: 1,
            field: name.to_owned(),
            hint: format!(" (no such column; the header has {}; see --text-field, --gold-field)", columns.join(", ")),
        })
    };
    let (text_col, gold_col, id_col) = (need(&fields.text)?, need(&fields.gold)?, column(&fields.id));
    let mut records = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| csv_error(&e))?;
        let line = row.position().map_or(0, |p| p.line() as usize);
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let cell = |i: usize| row.get(i).unwrap_or_default();
        let gold_text = cell(gold_col);
        let gold: Value = serde_json::from_str(gold_text).map_err(|err| InitError::CellJson {
            path: path.to_path_buf(),
            line,
            field: fields.gold.clone(),
            message: err.to_string(),
        })?;
        let id = id_col.map(cell).filter(|s| !s.trim().is_empty()).map(|s| Value::String(s.to_owned()));
        let text = Value::String(cell(text_col).to_owned());
        records.push(record(path, line, records.len() + 1, id, text, gold, object_keys(gold_text), fields)?);
    }
    Ok(records)
}

/// One record from its parts; `number` is its 1-based position (for a generated id).
#[allow(clippy::too_many_arguments)]
fn record(
    path: &Path,
    line: usize,
    number: usize,
    id: Option<Value>,
    text: Value,
    gold: Value,
    keys: Vec<String>,
    fields: &Fields,
) -> Result<Record, InitError> {
    let bad = |field: &str, expected: &'static str, found: &Value| InitError::BadField {
        path: path.to_path_buf(),
        line,
        field: field.to_owned(),
        expected,
        found: json_type(found),
    };
    let id = match id {
        None | Some(Value::Null) => format!("ex-{number:04}"),
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(bad(&fields.id, "a non-empty string or a number", &other)),
    };
    let Value::String(text) = text else {
        return Err(bad(&fields.text, "a string", &text));
    };
    let Value::Object(gold) = gold else {
        return Err(InitError::GoldNotObject {
            path: path.to_path_buf(),
            line,
            field: fields.gold.clone(),
            found: json_type(&gold),
        });
    };
    // The file's key order; the map's own order where the text gave none.
    let mut ordered: Vec<String> = keys.into_iter().filter(|k| gold.contains_key(k)).collect();
    for k in gold.keys() {
        if !ordered.contains(k) {
            ordered.push(k.clone());
        }
    }
    Ok(Record { line, id, text, gold, keys: ordered })
}

/// `serde_json`'s message without its " at line 1 column N" tail.
fn strip_position(err: &serde_json::Error) -> String {
    let message = err.to_string();
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message,
    }
}

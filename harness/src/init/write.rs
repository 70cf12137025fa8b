//! Writing the task files of `init`: `task.toml`, `schema.json`, `prompt.txt` and the three
//! split files (`{"id", "text", "expected"}` per line, fields in schema order).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::infer::{describe, FieldPlan, Matcher};
use super::split::SPLITS;
use super::{InitError, Record};

/// Everything the files are made of.
pub(super) struct Files<'a> {
    pub name: String,
    pub from: &'a Path,
    pub records: &'a [Record],
    pub plan: &'a [FieldPlan],
    /// Schema property order (the order of `expected`'s keys).
    pub order: &'a [String],
    /// Write absent fields as `null` (inferred schemas require every field).
    pub fill_nulls: bool,
    pub schema_given: bool,
    pub document_label: &'a str,
}

impl Files<'_> {
    /// Writes every file into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, schema_text: &str, assignment: &[Option<usize>]) -> Result<Vec<PathBuf>, InitError> {
        let mut written = Vec::new();
        let mut put = |name: &str, text: &str| -> Result<(), InitError> {
            let path = dir.join(name);
            fs_err::write(&path, text).map_err(InitError::Write)?;
            written.push(path);
            Ok(())
        };
        put("schema.json", schema_text)?;
        put("prompt.txt", &self.prompt())?;
        for (s, split) in SPLITS.iter().enumerate() {
            let mut text = String::new();
            for (r, a) in self.records.iter().zip(assignment) {
                if *a == Some(s) {
                    text.push_str(&self.line(r));
                    text.push('\n');
                }
            }
            put(&format!("{split}.jsonl"), &text)?;
        }
        // Last, so a failure above leaves no task.toml pointing at missing files.
        put("task.toml", &self.toml(assignment))?;
        Ok(written)
    }

    /// One split line, `expected`'s keys in schema order.
    fn line(&self, r: &Record) -> String {
        let q = |v: &str| Value::String(v.to_owned()).to_string();
        let mut keys: Vec<&String> = self.order.iter().filter(|k| self.fill_nulls || r.gold.contains_key(*k)).collect();
        keys.extend(r.keys.iter().filter(|k| !self.order.contains(k)));
        let fields: Vec<String> =
            keys.iter().map(|k| format!("{}: {}", q(k), r.gold.get(k.as_str()).unwrap_or(&Value::Null))).collect();
        format!("{{\"id\": {}, \"text\": {}, \"expected\": {{{}}}}}", q(&r.id), q(&r.text), fields.join(", "))
    }

    fn toml(&self, assignment: &[Option<usize>]) -> String {
        let s = |v: &str| toml::Value::String(v.to_owned()).to_string();
        let counts: Vec<usize> = (0..3).map(|i| assignment.iter().filter(|a| **a == Some(i)).count()).collect();
        let mut t = String::new();
        let _ = writeln!(t, "# Written by `promptloop init` from {} ({} records).", self.from.display(), self.records.len());
        let _ = writeln!(t, "name = {}", s(&self.name));
        t.push_str("schema = \"schema.json\"\nprompt = \"prompt.txt\"\n");
        let _ = writeln!(
            t,
            "# About twice the longest gold answer ({} characters of JSON), at 3 characters a token.",
            self.longest()
        );
        let _ = writeln!(t, "max-tokens = {}", self.max_tokens());
        t.push_str("# The document goes into prompts as \"{label}:\\n\\n{text}\"; \"\" = the text alone.\n");
        let _ = writeln!(t, "document-label = {}", s(self.document_label));
        let _ = writeln!(t, "\n# {} / {} / {} records.\n[splits]", counts[0], counts[1], counts[2]);
        for split in SPLITS {
            let _ = writeln!(t, "{split} = \"{split}.jsonl\"");
        }
        if !self.schema_given {
            t.push_str(
                "\n# Matchers: list (set F1 of items), date (day-first = true: 03/04/2020 is 3 April), enum,\n\
                 # number (numbers and numeric text), text (free text: word similarity, 0 below `fuzzy`),\n\
                 # exact (normalised text: codes, ids, single words).",
            );
            for f in self.plan {
                let name = if f.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    f.name.clone()
                } else {
                    s(&f.name)
                };
                let _ = write!(t, "\n[fields.{name}]\nmatch = \"{}\"\n", f.matcher.as_str());
                if f.matcher == Matcher::Text {
                    let _ = writeln!(t, "fuzzy = {}", crate::task::DEFAULT_TEXT_FUZZY);
                }
                if f.day_first {
                    t.push_str("day-first = true\n");
                }
            }
        }
        t
    }

    /// Characters of the longest gold object as JSON.
    fn longest(&self) -> usize {
        self.records.iter().map(|r| Value::Object(r.gold.clone()).to_string().len()).max().unwrap_or(0)
    }

    /// `max-tokens`: twice the longest gold answer at 3 characters a token, rounded up to a
    /// multiple of 64, within 128..=2048.
    fn max_tokens(&self) -> usize {
        (2 * self.longest() / 3).div_ceil(64).saturating_mul(64).clamp(128, 2048)
    }

    /// A starter prompt: what to extract, one line per field with its type or values.
    fn prompt(&self) -> String {
        let noun = if self.document_label.is_empty() { "document".to_owned() } else { self.document_label.to_lowercase() };
        let mut p = format!("Read the {noun} and extract the following fields as one JSON object.\n\n");
        for f in self.plan {
            let _ = writeln!(p, "- {}: {}.", f.name, describe(f));
        }
        let _ = write!(p, "\nUse null when the {noun} does not give a value. Copy text exactly as written in the {noun}.\n");
        p
    }
}

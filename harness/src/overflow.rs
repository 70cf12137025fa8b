//! Documents longer than the engine's context (`--on-overflow`): `error` reports the example
//! as `too_long` with its length and the run goes on; `chunk` splits the document into
//! overlapping windows that fit, extracts from each, and merges field-wise (first non-null
//! scalar, union of lists); `truncate` keeps the head that fits. Chunked and truncated examples
//! are flagged on their records: nothing is cut silently.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::score::matchers::{is_empty_value, normalize_text, value_text};

/// What happens to a document that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    #[default]
    Error,
    Chunk,
    Truncate,
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overflow::Error => "error",
            Overflow::Chunk => "chunk",
            Overflow::Truncate => "truncate",
        })
    }
}

impl FromStr for Overflow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(Overflow::Error),
            "chunk" => Ok(Overflow::Chunk),
            "truncate" => Ok(Overflow::Truncate),
            other => Err(format!("unknown overflow policy `{other}` (expected error, chunk or truncate)")),
        }
    }
}

/// Share of a window repeated at the start of the next one.
pub const OVERLAP: f64 = 0.1;

/// Byte offset of char `i` of `text` (or its length).
fn byte_at(text: &str, i: usize) -> usize {
    text.char_indices().nth(i).map_or(text.len(), |(b, _)| b)
}

/// The longest head of `text` (in chars, on a char boundary) for which `fits` holds, by
/// bisection; "" when not even one char fits.
pub fn fitting_head<E>(text: &str, fits: &mut dyn FnMut(&str) -> Result<bool, E>) -> Result<String, E> {
    let n = text.chars().count();
    if fits(text)? {
        return Ok(text.to_owned());
    }
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(&text[..byte_at(text, mid)])? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(text[..byte_at(text, lo)].to_owned())
}

/// Overlapping windows of `text` that each satisfy `fits`, covering all of it. `Ok(vec![])`
/// when not even a small window fits.
pub fn windows<E>(text: &str, fits: &mut dyn FnMut(&str) -> Result<bool, E>) -> Result<Vec<String>, E> {
    let n = text.chars().count();
    let mut out = Vec::new();
    let mut start = 0usize;
    while start < n {
        let rest = &text[byte_at(text, start)..];
        let head = fitting_head(rest, fits)?;
        let len = head.chars().count();
        if len == 0 {
            return Ok(Vec::new());
        }
        out.push(head);
        if start + len >= n {
            break;
        }
        let step = ((len as f64) * (1.0 - OVERLAP)).floor().max(1.0) as usize;
        start += step;
    }
    Ok(out)
}

/// Merges the objects extracted from the windows, property by property in `fields` order: the
/// first non-empty scalar, the union of lists (first spelling kept, compared normalised).
/// Outputs that are not objects (a window cut off mid-JSON) are skipped.
pub fn merge(outputs: &[Option<Value>], fields: &[&str]) -> Value {
    let objects: Vec<&Map<String, Value>> = outputs.iter().filter_map(|o| o.as_ref().and_then(Value::as_object)).collect();
    let mut keys: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    for o in &objects {
        for k in o.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let mut merged = Map::new();
    for key in keys {
        let values: Vec<&Value> = objects.iter().filter_map(|o| o.get(&key)).collect();
        let value = if values.iter().any(|v| v.is_array()) {
            let mut seen = Vec::new();
            let mut items = Vec::new();
            for item in values.iter().filter_map(|v| v.as_array()).flatten() {
                let norm = normalize_text(&value_text(item));
                if !seen.contains(&norm) {
                    seen.push(norm);
                    items.push(item.clone());
                }
            }
            if items.is_empty() && values.iter().any(|v| v.is_null()) {
                Value::Null
            } else {
                Value::Array(items)
            }
        } else {
            values
                .iter()
                .find(|v| !is_empty_value(v))
                .map_or_else(|| values.first().map_or(Value::Null, |v| (*v).clone()), |v| (*v).clone())
        };
        merged.insert(key, value);
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn by_chars(max: usize) -> impl FnMut(&str) -> Result<bool, ()> {
        move |s: &str| Ok(s.chars().count() <= max)
    }

    #[test]
    fn windows_fit_overlap_and_cover_the_text() {
        let text: String = (0..250).fold(String::new(), |mut s, i| {
            use std::fmt::Write as _;
            let _ = write!(s, "{i:03} ");
            s
        });
        let ws = windows(&text, &mut by_chars(300)).unwrap();
        assert!(ws.len() >= 4, "{}", ws.len());
        assert!(ws.iter().all(|w| w.chars().count() <= 300));
        // Consecutive windows overlap, and the last one ends the text.
        for pair in ws.windows(2) {
            assert!(pair[0].contains(&pair[1][..12]), "no overlap");
        }
        assert!(text.ends_with(ws.last().unwrap().as_str()));
        assert!(text.starts_with(ws[0].as_str()));
        assert_eq!(windows("short", &mut by_chars(300)).unwrap(), vec!["short"]);
        assert!(windows("abc", &mut by_chars(0)).unwrap().is_empty());
        // Multi-byte text is cut on char boundaries.
        let ws = windows(&"é".repeat(700), &mut by_chars(200)).unwrap();
        assert!(ws.iter().all(|w| w.chars().all(|c| c == 'é')));
    }

    #[test]
    fn merge_takes_first_scalars_and_unions_lists() {
        let schema = ["title", "parties", "date", "law"];
        let outs = vec![
            Some(json!({"title": null, "parties": ["Acme Corp.", "Beta LLC"], "date": "", "law": null})),
            None,
            Some(json!({"title": "SUPPLY AGREEMENT", "parties": ["ACME CORP", "Gamma Inc."], "date": "2010-01-01", "law": null})),
            Some(json!({"title": "OTHER", "parties": null, "date": "2011-01-01", "law": null})),
        ];
        let m = merge(&outs, &schema);
        assert_eq!(m["title"], "SUPPLY AGREEMENT");
        assert_eq!(m["parties"], json!(["Acme Corp.", "Beta LLC", "Gamma Inc."]));
        assert_eq!(m["date"], "2010-01-01");
        assert_eq!(m["law"], Value::Null);
        assert_eq!(m.as_object().unwrap().len(), 4);
    }
}

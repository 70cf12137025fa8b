//! Text feedback and evidence for each field verdict: where the gold value occurs in the
//! document (byte offsets, or "not found verbatim"), and one sentence that says what went
//! wrong in terms a proposer (an LLM, or the offline edits) can act on.
//!
//! Matching is case-insensitive (ASCII) and treats any run of whitespace as one space, so a
//! value that the document breaks over two lines is still found. Offsets are byte offsets
//! into the original document, on char boundaries.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::matchers::is_empty_value;
use super::{ExampleScore, FailureClass, FieldVerdict};

/// Gold values shorter than this (in chars) are not searched for: "No", "1" or "CA" occur
/// everywhere, and a hit would be noise.
pub const MIN_NEEDLE_CHARS: usize = 3;
/// Characters of a value quoted in feedback.
const QUOTE_CHARS: usize = 80;

/// Where one gold value occurs in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The gold value searched for (one element, for a list field).
    pub value: String,
    /// Byte offsets `[start, end)` of its first occurrence; `None` when it is not in the
    /// document verbatim (case and whitespace aside).
    pub at: Option<(usize, usize)>,
}

/// Where a field's gold value occurs in the document: one span per searched value (a list
/// field has one per element). Empty when the gold value is null or too short to search.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub spans: Vec<Span>,
}

impl Evidence {
    /// The first span that was found.
    pub fn first_found(&self) -> Option<(usize, usize)> {
        self.spans.iter().find_map(|s| s.at)
    }

    /// Whether some searched value is not in the document verbatim.
    pub fn any_missing(&self) -> bool {
        self.spans.iter().any(|s| s.at.is_none())
    }
}

/// Fills `feedback` and `evidence` of every field verdict of `score` from `document`.
pub fn attach(score: &mut ExampleScore, document: &str) {
    let haystack = Normalized::new(document);
    for verdict in &mut score.fields {
        let evidence = locate(&haystack, &verdict.expected);
        verdict.feedback = describe(verdict, &evidence, document.len());
        verdict.evidence = (!evidence.spans.is_empty()).then_some(evidence);
    }
}

/// Where the strings of `expected` occur in the document.
fn locate(haystack: &Normalized, expected: &Value) -> Evidence {
    let mut spans = Vec::new();
    for value in strings(expected) {
        if value.trim().chars().count() < MIN_NEEDLE_CHARS {
            continue;
        }
        spans.push(Span { at: haystack.find(&value), value });
    }
    Evidence { spans }
}

/// Finds `needle` in `document` as [`attach`] does; byte offsets into `document`.
pub fn find(document: &str, needle: &str) -> Option<(usize, usize)> {
    Normalized::new(document).find(needle)
}

/// The scalar values of a gold value as strings (numbers and booleans included), in order.
pub fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::Object(o) => o.values().flat_map(strings).collect(),
        Value::Null => Vec::new(),
    }
}

/// One sentence on a verdict; empty when the field is correct.
fn describe(v: &FieldVerdict, evidence: &Evidence, doc_len: usize) -> String {
    let Some(class) = v.class else { return String::new() };
    let expected = quote(&v.expected);
    let predicted = quote(&v.predicted);
    let mut out = match class {
        FailureClass::Format => "the output was not a JSON object matching the schema".to_owned(),
        FailureClass::Truncated => "the output hit the token cap before it was valid JSON (usually a loop)".to_owned(),
        FailureClass::Missed => format!("answered null, expected {expected}"),
        FailureClass::Hallucinated => {
            format!("answered {predicted}, but the document states no value for this field (expected null)")
        }
        FailureClass::Wrong => format!("answered {predicted}, expected {expected}"),
    };
    if matches!(class, FailureClass::Format | FailureClass::Truncated) || is_empty_value(&v.expected) {
        return out;
    }
    match evidence.first_found() {
        Some((start, _)) => {
            let _ = write!(out, "; the expected value is in the document at byte {start} of {doc_len}");
            if evidence.any_missing() {
                out.push_str(" (some of its items are not found verbatim)");
            }
        }
        None if !evidence.spans.is_empty() => {
            out.push_str("; the expected value is not in the document verbatim (it is normalised or paraphrased)");
        }
        None => {}
    }
    out
}

fn quote(v: &Value) -> String {
    if is_empty_value(v) {
        return "null".into();
    }
    let s = serde_json::to_string(v).unwrap_or_default();
    match s.char_indices().nth(QUOTE_CHARS) {
        None => s,
        Some((i, _)) => format!("{}...", &s[..i]),
    }
}

/// A document lower-cased (ASCII) with whitespace runs collapsed to one space, and for each
/// byte of that text the byte offset in the original it came from.
struct Normalized {
    text: String,
    origin: Vec<usize>,
    original_len: usize,
}

impl Normalized {
    fn new(original: &str) -> Normalized {
        let mut text = String::with_capacity(original.len());
        let mut origin = Vec::with_capacity(original.len());
        let mut in_space = false;
        for (at, c) in original.char_indices() {
            if c.is_whitespace() {
                if !in_space {
                    text.push(' ');
                    origin.push(at);
                }
                in_space = true;
                continue;
            }
            in_space = false;
            let c = c.to_ascii_lowercase();
            for _ in 0..c.len_utf8() {
                origin.push(at);
            }
            text.push(c);
        }
        Normalized { text, origin, original_len: original.len() }
    }

    /// Byte offsets in the original of the first occurrence of `needle` (normalised the
    /// same way, trimmed).
    fn find(&self, needle: &str) -> Option<(usize, usize)> {
        let needle = Normalized::new(needle.trim()).text;
        if needle.is_empty() {
            return None;
        }
        let start = self.text.find(&needle)?;
        let end = start + needle.len();
        let original_start = self.origin[start];
        // The end is where the byte after the match came from; the last char's end when the
        // match runs to the end of the text.
        let original_end = self.origin.get(end).copied().unwrap_or(self.original_len);
        Some((original_start, original_end))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::score::score_example;
    use crate::task::{FieldSpec, MatchRule};

    #[test]
    fn finds_a_value_across_case_and_line_breaks_with_original_offsets() {
        let doc = "Preamble.\nThis   AGREEMENT is governed by the laws of the State of\n  New York.";
        let (start, end) = find(doc, "the State of New York").unwrap();
        assert_eq!(&doc[start..end], "the State of\n  New York");
        let (s, e) = find(doc, "this agreement").unwrap();
        assert_eq!(&doc[s..e], "This   AGREEMENT");
        assert_eq!(find(doc, "California"), None);
    }

    #[test]
    fn offsets_stay_on_char_boundaries_with_multibyte_text() {
        let doc = "Société Générale — Partie: ACME Lté";
        let (s, e) = find(doc, "acme lté").unwrap();
        assert_eq!(&doc[s..e], "ACME Lté");
        let (s, e) = find(doc, "Générale").unwrap();
        assert_eq!(&doc[s..e], "Générale");
    }

    fn verdict(class: Option<FailureClass>, predicted: Value, expected: Value) -> FieldVerdict {
        FieldVerdict {
            field: "law".into(),
            score: if class.is_none() { 1.0 } else { 0.0 },
            correct: class.is_none(),
            class,
            predicted,
            expected,
            feedback: String::new(),
            evidence: None,
            confidence: None,
            scored: true,
        }
    }

    fn attached(v: FieldVerdict, doc: &str) -> FieldVerdict {
        let mut s = ExampleScore { score: v.score, fields: vec![v], format_ok: true, truncated: false, format_error: None };
        attach(&mut s, doc);
        s.fields.remove(0)
    }

    #[test]
    fn a_missed_value_says_where_the_gold_value_is() {
        let doc = "Governing law. This contract is governed by Delaware law.";
        let v = attached(verdict(Some(FailureClass::Missed), Value::Null, json!("Delaware")), doc);
        let at = doc.find("Delaware").unwrap();
        assert_eq!(v.evidence.as_ref().and_then(Evidence::first_found), Some((at, at + 8)));
        assert!(v.feedback.starts_with("answered null, expected \"Delaware\""), "{}", v.feedback);
        assert!(v.feedback.contains(&format!("at byte {at} of {}", doc.len())), "{}", v.feedback);
    }

    #[test]
    fn a_value_not_in_the_document_says_so() {
        let doc = "Dated March 1, 2019.";
        let v = attached(verdict(Some(FailureClass::Wrong), json!("2019-01-03"), json!("2019-03-01")), doc);
        assert_eq!(v.evidence.as_ref().map(|e| e.spans[0].at), Some(None));
        assert!(v.feedback.contains("not in the document verbatim"), "{}", v.feedback);
    }

    #[test]
    fn a_hallucination_names_the_invented_value_and_a_correct_field_gets_no_feedback() {
        let doc = "No governing law clause.";
        let v = attached(verdict(Some(FailureClass::Hallucinated), json!("Texas"), Value::Null), doc);
        assert!(v.feedback.contains("answered \"Texas\""), "{}", v.feedback);
        assert!(v.feedback.contains("expected null"), "{}", v.feedback);
        assert_eq!(v.evidence, None);
        let ok = attached(verdict(None, json!("Texas"), json!("Texas")), "Texas law applies.");
        assert_eq!(ok.feedback, "");
        assert_eq!(ok.evidence.as_ref().and_then(Evidence::first_found), Some((0, 5)));
    }

    #[test]
    fn list_fields_get_one_span_per_item_and_short_values_are_not_searched() {
        let doc = "Between Acme Corp and Beta LLC.";
        let v = attached(verdict(Some(FailureClass::Wrong), json!(["Acme Corp"]), json!(["Acme Corp", "Gamma Inc", "X"])), doc);
        let e = v.evidence.unwrap();
        assert_eq!(e.spans.len(), 2, "\"X\" is too short to search: {e:?}");
        assert_eq!(e.spans[0].at, Some((8, 17)));
        assert_eq!(e.spans[1].at, None);
        assert!(v.feedback.contains("some of its items are not found verbatim"), "{}", v.feedback);
    }

    #[test]
    fn a_scored_example_round_trips_through_json_and_old_records_still_read() {
        let fields = vec![FieldSpec { name: "law".into(), rule: MatchRule::Exact, sparse: false }];
        let mut s = score_example(&fields, r#"{"law": null}"#, false, &json!({"law": "Ohio"}), None);
        attach(&mut s, "Ohio law governs.");
        let back: ExampleScore = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let old = r#"{"field":"law","score":0.0,"correct":false,"class":"missed","predicted":null,"expected":"Ohio"}"#;
        let v: FieldVerdict = serde_json::from_str(old).unwrap();
        assert_eq!((v.feedback.as_str(), v.evidence), ("", None));
    }
}

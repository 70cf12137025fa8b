//! Per-field confidence from the engine's token log-probabilities, at no extra cost: each
//! field's value is located in the output JSON (a byte span), the output tokens that overlap
//! it are collected, and the mean and min log-probability of those the model chose (tokens the
//! constraint forced are left out: they say nothing about the model) become the field's
//! [`Confidence`]. With it a verdict reads "wrong and sure" (a confident mistake: the prompt
//! must change what the model believes) or "right by luck" (correct on a coin flip: the next
//! prompt may lose it).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use engines::TokenLogprob;

use super::{ExampleScore, FieldVerdict};

/// A chosen token below this probability makes the value a guess.
pub const GUESS_BELOW: f64 = 0.3;
/// Every chosen token at or above this probability makes the model sure of the value.
pub const SURE_AT: f64 = 0.6;

/// How sure the model was of one field's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    /// Mean log-probability of the value's chosen tokens.
    pub mean_logprob: f32,
    /// The lowest of them.
    pub min_logprob: f32,
    /// How many tokens the model chose in the value (forced ones not counted).
    pub tokens: u32,
}

impl Confidence {
    /// The geometric mean probability of the value's chosen tokens.
    pub fn mean_p(&self) -> f64 {
        f64::from(self.mean_logprob).exp()
    }

    /// The probability of the least likely chosen token.
    pub fn min_p(&self) -> f64 {
        f64::from(self.min_logprob).exp()
    }

    /// Every chosen token had probability [`SURE_AT`] or more.
    pub fn sure(&self) -> bool {
        self.min_p() >= SURE_AT
    }

    /// Some chosen token had probability under [`GUESS_BELOW`].
    pub fn guess(&self) -> bool {
        self.min_p() < GUESS_BELOW
    }
}

impl FieldVerdict {
    /// Wrong, and every token of the answer was chosen with probability [`SURE_AT`] or more.
    pub fn wrong_and_sure(&self) -> bool {
        !self.correct && self.confidence.is_some_and(|c| c.sure())
    }

    /// Correct, but some token of the answer was a guess (under [`GUESS_BELOW`]).
    pub fn right_by_luck(&self) -> bool {
        self.correct && self.confidence.is_some_and(|c| c.guess())
    }
}

/// Sets `confidence` on every field verdict of `score` whose value is found in `output` (the
/// text the tokens of `logprobs` spell) and has at least one chosen token; appends what it
/// says to the feedback of a wrong field the model was sure of. No log-probabilities (remote
/// engines, the scripted one), no confidences.
pub fn attach(score: &mut ExampleScore, output: &str, logprobs: &[TokenLogprob]) {
    if logprobs.is_empty() {
        return;
    }
    let spans = value_spans(output);
    for v in &mut score.fields {
        let Some(&(_, start, end)) = spans.iter().find(|(k, _, _)| *k == v.field) else { continue };
        v.confidence = over(logprobs, start, end);
        if let (Some(c), false) = (v.confidence, v.feedback.is_empty()) {
            if c.sure() {
                let _ = write!(v.feedback, "; the model was sure of its answer (every token p >= {:.2})", c.min_p());
            } else if c.guess() {
                let _ = write!(v.feedback, "; the model was unsure (a token at p {:.2})", c.min_p());
            }
        }
    }
}

/// The confidence of the chosen tokens among `logprobs` that overlap bytes `[start, end)`.
fn over(logprobs: &[TokenLogprob], start: usize, end: usize) -> Option<Confidence> {
    let mut at = 0usize;
    let (mut sum, mut min, mut n) = (0.0f64, f32::INFINITY, 0u32);
    for t in logprobs {
        let (a, b) = (at, at + t.bytes as usize);
        at = b;
        if a >= end {
            break;
        }
        if b <= start {
            continue;
        }
        if let Some(lp) = t.logprob {
            sum += f64::from(lp);
            min = min.min(lp);
            n += 1;
        }
    }
    (n > 0).then(|| Confidence { mean_logprob: (sum / f64::from(n)) as f32, min_logprob: min, tokens: n })
}

/// The top-level members of the JSON object `text` starts with (after whitespace): each key
/// with the byte span `[start, end)` of its value. Scans as far as the text is well formed, so
/// a truncated output still gives the members before the cut.
pub fn value_spans(text: &str) -> Vec<(String, usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return out;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'"') => {}
            _ => return out,
        }
        let Some(key_end) = string_end(b, i) else { return out };
        let key = serde_json::from_str::<String>(&text[i..key_end]).unwrap_or_default();
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return out;
        }
        let start = skip_ws(b, i + 1);
        let Some(end) = value_end(b, start) else { return out };
        out.push((key, start, end));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i += 1,
            _ => return out,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string starting at `b[i] == '"'`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The end (exclusive) of the JSON value starting at `i`: a string, an object or array (to its
/// matching bracket, strings skipped), or a literal (to the next `,`, `}`, `]` or space).
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let j = (i..b.len()).find(|&j| matches!(b[j], b',' | b'}' | b']') || b[j].is_ascii_whitespace()).unwrap_or(b.len());
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::FailureClass;
    use serde_json::json;

    fn tok(bytes: u32, logprob: Option<f32>) -> TokenLogprob {
        TokenLogprob { token: 0, bytes, logprob }
    }

    #[test]
    fn value_spans_find_each_top_level_member() {
        let t = r#" {"a": "x, \"y\"}", "b" :null,"c":[1, {"d": "]"}], "e": 12.5}"#;
        let spans = value_spans(t);
        let got: Vec<(&str, &str)> = spans.iter().map(|(k, s, e)| (k.as_str(), &t[*s..*e])).collect();
        assert_eq!(got, [("a", r#""x, \"y\"}""#), ("b", "null"), ("c", r#"[1, {"d": "]"}]"#), ("e", "12.5")]);
        // Cut short: the members before the cut.
        let cut = r#"{"a": "x", "b": "unterminated"#;
        assert_eq!(value_spans(cut).len(), 1);
        assert!(value_spans("not json").is_empty());
        assert!(value_spans("").is_empty());
    }

    #[test]
    fn a_fields_confidence_covers_the_chosen_tokens_of_its_value_only() {
        // {"a": "Acme", "b": null}   tokens: `{"a": ` forced, ` "` .. see bytes below.
        let text = r#"{"a": "Acme", "b": null}"#;
        let lps = [
            tok(6, None),        // `{"a": ` (forced)
            tok(3, Some(-0.1)),  // `"Ac`
            tok(3, Some(-2.0)),  // `me"`
            tok(2, None),        // `, ` (forced)
            tok(5, None),        // `"b": ` (forced)
            tok(4, Some(-0.01)), // `null`
            tok(1, None),        // `}`
        ];
        assert_eq!(lps.iter().map(|t| t.bytes as usize).sum::<usize>(), text.len());
        let fields = ["a", "b"];
        let mut score = crate::score::score_example(
            &fields
                .iter()
                .map(|f| crate::task::FieldSpec { name: (*f).into(), rule: crate::task::MatchRule::Exact, sparse: false })
                .collect::<Vec<_>>(),
            text,
            false,
            &json!({"a": "Beta", "b": null}),
            None,
        );
        super::super::feedback::attach(&mut score, "Beta Corp and Acme");
        attach(&mut score, text, &lps);
        let a = score.fields[0].confidence.expect("a has chosen tokens");
        assert_eq!(a.tokens, 2);
        assert!((f64::from(a.mean_logprob) - (-1.05)).abs() < 1e-6 && (f64::from(a.min_logprob) - (-2.0)).abs() < 1e-6);
        assert!(a.guess() && !a.sure());
        let b = score.fields[1].confidence.expect("b has a chosen token");
        assert_eq!(b.tokens, 1);
        assert!(b.sure());
        assert_eq!(score.fields[0].class, Some(FailureClass::Wrong));
        assert!(score.fields[0].feedback.contains("the model was unsure (a token at p 0.14)"), "{}", score.fields[0].feedback);
        assert!(!score.fields[0].wrong_and_sure() && !score.fields[0].right_by_luck());
        assert!(score.fields[1].correct && !score.fields[1].right_by_luck());
        assert!(score.fields[1].feedback.is_empty(), "a correct field gets no feedback");
    }

    #[test]
    fn forced_only_values_and_missing_logprobs_give_no_confidence() {
        let text = r#"{"a": "x"}"#;
        let fields = [crate::task::FieldSpec { name: "a".into(), rule: crate::task::MatchRule::Exact, sparse: false }];
        let mut score = crate::score::score_example(&fields, text, false, &json!({"a": "y"}), None);
        attach(&mut score, text, &[tok(10, None)]);
        assert_eq!(score.fields[0].confidence, None);
        attach(&mut score, text, &[]);
        assert_eq!(score.fields[0].confidence, None);
        // Sure and wrong.
        attach(&mut score, text, &[tok(6, None), tok(3, Some(-0.05)), tok(1, None)]);
        assert!(score.fields[0].wrong_and_sure());
    }
}

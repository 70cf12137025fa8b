//! The per-field matchers behind [`crate::task::MatchRule`]: each compares one predicted and
//! one expected value (both non-null) and returns a score in `[0, 1]`.
//!
//! - `exact`: text equality after [`normalize_text`].
//! - `date`: ISO dates after [`normalize_dates_in`] (numeric dates month or day first, as the
//!   field says), else `exact`.
//! - `enum`: trimmed, case-folded equality.
//! - `number`: numeric equality within a tolerance (numbers or numeric strings), else `exact`.
//! - `list`: F1 of a greedy one-to-one matching of items by name similarity ([`list_match`]).
//! - `text`: free text (names, addresses): [`text_similarity`] when it reaches the field's
//!   `fuzzy` threshold, else 0. Graded, so a near miss ("Jon Smith" for "John Smith") earns
//!   most of the point and an unrelated answer none.

use serde_json::Value;

pub use super::date::{normalize_date, normalize_date_in, normalize_dates, normalize_dates_in, DateOrder};
use crate::task::MatchRule;

/// Scores `predicted` against `expected` (both present) under `rule`, in `[0, 1]`.
pub fn score_values(rule: &MatchRule, predicted: &Value, expected: &Value) -> f64 {
    let score = match rule {
        MatchRule::Exact => exact(predicted, expected),
        MatchRule::Date { day_first } => date_in(predicted, expected, DateOrder::day_first(*day_first)),
        MatchRule::Enum => enum_eq(predicted, expected),
        MatchRule::Number { tolerance } => number(predicted, expected, *tolerance),
        MatchRule::List { fuzzy } => list_match(&items(predicted), &items(expected), *fuzzy).f1,
        MatchRule::Text { fuzzy } => text(predicted, expected, *fuzzy),
    };
    score.clamp(0.0, 1.0)
}

/// Lower-case (Unicode), drop punctuation, treat dashes, slashes and separators (`,;:`) as
/// spaces, collapse whitespace. Curly and straight quotes are both dropped; `AT&T` -> `att`.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.extend(c.to_lowercase());
        } else if c.is_whitespace() || is_separator(c) {
            space = true;
        }
    }
    out
}

/// Punctuation that separates words rather than sitting inside them.
fn is_separator(c: char) -> bool {
    matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '/' | '\\' | '_' | ',' | ';' | ':' | '|' | '+' | '=')
}

/// The text of a scalar value; arrays join their items with `"; "`.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

/// Whether a value counts as "no answer": null, an empty or blank string, an empty object, or
/// an array with no non-empty item.
pub fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(items) => items.iter().all(is_empty_value),
        Value::Object(map) => map.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

fn score_of(equal: bool) -> f64 {
    if equal {
        1.0
    } else {
        0.0
    }
}

/// `exact`: equality after [`normalize_text`].
pub fn exact(predicted: &Value, expected: &Value) -> f64 {
    score_of(normalize_text(&value_text(predicted)) == normalize_text(&value_text(expected)))
}

/// `date`: equal ISO dates when both sides normalise (numeric dates month first), else
/// [`exact`].
pub fn date(predicted: &Value, expected: &Value) -> f64 {
    date_in(predicted, expected, DateOrder::MonthFirst)
}

/// [`date`] with numeric dates on both sides read in `order`.
pub fn date_in(predicted: &Value, expected: &Value, order: DateOrder) -> f64 {
    match (normalize_dates_in(&value_text(predicted), order), normalize_dates_in(&value_text(expected), order)) {
        (Some(p), Some(e)) => score_of(p == e),
        _ => exact(predicted, expected),
    }
}

/// `text`: [`text_similarity`] when it is at least `fuzzy`, else 0.
pub fn text(predicted: &Value, expected: &Value, fuzzy: f64) -> f64 {
    let sim = text_similarity(&value_text(predicted), &value_text(expected));
    if sim >= fuzzy {
        sim
    } else {
        0.0
    }
}

/// Word-level similarity in `[0, 1]` of two free texts: the F1 of a greedy one-to-one matching
/// of their words (after [`normalize_text`]), each pair weighted by [`word_similarity`]. Word
/// order does not count ("Smith, John" = "John Smith"); a missing or extra word costs its share.
pub fn text_similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (normalize_text(a), normalize_text(b));
    if a == b {
        return 1.0;
    }
    let (aw, bw): (Vec<&str>, Vec<&str>) = (a.split(' ').collect(), b.split(' ').collect());
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, x) in aw.iter().enumerate() {
        for (j, y) in bw.iter().enumerate() {
            let sim = word_similarity(x, y);
            if sim > 0.0 {
                pairs.push((sim, i, j));
            }
        }
    }
    pairs.sort_by(|p, q| q.0.total_cmp(&p.0).then(p.1.cmp(&q.1)).then(p.2.cmp(&q.2)));
    let (mut a_used, mut b_used) = (vec![false; aw.len()], vec![false; bw.len()]);
    let mut matched = 0.0;
    for (sim, i, j) in pairs {
        if !a_used[i] && !b_used[j] {
            a_used[i] = true;
            b_used[j] = true;
            matched += sim;
        }
    }
    2.0 * matched / (aw.len() + bw.len()) as f64
}

/// Similarity of two normalised words: 1 when equal; 0 when either holds a digit (numbers,
/// house numbers and codes match exactly or not at all); 0.9 when one is a prefix of the other
/// of at least two letters (`st`/`street`, `corp`/`corporation`); else their Jaro-Winkler
/// similarity when it is at least 0.85 (`jon`/`john`), otherwise 0.
pub fn word_similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    if a.chars().chain(b.chars()).any(char::is_numeric) {
        return 0.0;
    }
    let (short, long) = if a.chars().count() <= b.chars().count() { (a, b) } else { (b, a) };
    if short.chars().count() >= 2 && long.starts_with(short) {
        return 0.9;
    }
    let jw = strsim::jaro_winkler(a, b);
    if jw >= 0.85 {
        jw
    } else {
        0.0
    }
}

/// `enum`: equality after trimming and case-folding.
pub fn enum_eq(predicted: &Value, expected: &Value) -> f64 {
    let fold = |v: &Value| value_text(v).trim().to_lowercase();
    score_of(fold(predicted) == fold(expected))
}

/// `number`: `|p - e| <= tolerance` when both are numbers (or strings like `"$1,200"`,
/// `"15%"`), else [`exact`].
pub fn number(predicted: &Value, expected: &Value, tolerance: f64) -> f64 {
    match (parse_number(predicted), parse_number(expected)) {
        (Some(p), Some(e)) => score_of((p - e).abs() <= tolerance),
        _ => exact(predicted, expected),
    }
}

/// A finite number from a JSON number or a numeric string (`,` `$` `%` and spaces ignored).
pub fn parse_number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => {
            let cleaned: String = s.chars().filter(|c| !matches!(c, ',' | '$' | '%') && !c.is_whitespace()).collect();
            cleaned.parse::<f64>().ok()?
        }
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// The items of a list value: array items as text (empty ones dropped); a lone scalar is a
/// one-item list.
pub fn items(value: &Value) -> Vec<String> {
    match value {
        Value::Array(values) => values.iter().filter(|v| !is_empty_value(v)).map(value_text).collect(),
        other if is_empty_value(other) => Vec::new(),
        other => vec![value_text(other)],
    }
}

/// The comparable name of a list item: the part before a defined-term alias parenthesis,
/// normalised. `Rogers Cable Communications Inc. ("Rogers")` -> `rogers cable communications inc`.
pub fn item_key(item: &str) -> String {
    let head = item.find('(').map_or(item, |i| &item[..i]);
    let key = normalize_text(head);
    if key.is_empty() {
        normalize_text(item)
    } else {
        key
    }
}

/// Similarity in `[0, 1]` of two item keys (normalised Levenshtein).
pub fn similarity(a: &str, b: &str) -> f64 {
    if a == b {
        1.0
    } else {
        strsim::normalized_levenshtein(a, b)
    }
}

/// Set precision/recall/F1 of a list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListMatch {
    pub matched: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Matches predicted to expected items one to one, greedily by best [`similarity`] of their
/// [`item_key`]s, counting pairs at or above `fuzzy`. Two empty lists score 1.
pub fn list_match(predicted: &[String], expected: &[String], fuzzy: f64) -> ListMatch {
    if predicted.is_empty() && expected.is_empty() {
        return ListMatch { matched: 0, precision: 1.0, recall: 1.0, f1: 1.0 };
    }
    let p_keys: Vec<String> = predicted.iter().map(|s| item_key(s)).collect();
    let e_keys: Vec<String> = expected.iter().map(|s| item_key(s)).collect();
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, p) in p_keys.iter().enumerate() {
        for (j, e) in e_keys.iter().enumerate() {
            let sim = similarity(p, e);
            if sim >= fuzzy {
                pairs.push((sim, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut p_used = vec![false; predicted.len()];
    let mut e_used = vec![false; expected.len()];
    let mut matched = 0;
    for (_, i, j) in pairs {
        if !p_used[i] && !e_used[j] {
            p_used[i] = true;
            e_used[j] = true;
            matched += 1;
        }
    }
    let ratio = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let precision = ratio(matched, predicted.len());
    let recall = ratio(matched, expected.len());
    let f1 = if matched == 0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    ListMatch { matched, precision, recall, f1 }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // matcher scores are exactly 0.0 or 1.0 here
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn normalize_text_folds_case_space_punctuation_quotes() {
        assert_eq!(normalize_text("  Rogers   Cable\tInc. "), "rogers cable inc");
        assert_eq!(normalize_text("ROGERS CABLE, INC."), "rogers cable inc");
        assert_eq!(normalize_text("\u{201c}Rogers\u{201d}"), normalize_text("\"Rogers\""));
        assert_eq!(normalize_text("Rogers\u{2019}s"), normalize_text("Rogers's"));
        assert_eq!(normalize_text("AT&T"), "att");
        assert_eq!(normalize_text("AT & T"), "at t");
        assert_eq!(normalize_text("Ontario, Canada"), "ontario canada");
        assert_eq!(normalize_text("ÉCOLE Straße"), "école straße");
        assert_eq!(normalize_text("non-exclusive"), "non exclusive");
        assert_eq!(normalize_text("New\u{a0}York"), "new york");
        assert_eq!(normalize_text("..."), "");
    }

    #[test]
    fn exact_matcher() {
        assert_eq!(exact(&json!("New York"), &json!("new  york.")), 1.0);
        assert_eq!(exact(&json!("Delaware"), &json!("New York")), 0.0);
        assert_eq!(exact(&json!("successive 1 year"), &json!("Successive 1-Year")), 1.0);
        assert_eq!(exact(&json!(12), &json!("12")), 1.0);
    }

    #[test]
    fn date_matcher_normalises_formats() {
        assert_eq!(date(&json!("January 1, 2010"), &json!("2010-01-01")), 1.0);
        assert_eq!(date(&json!("1st day of January, 2010"), &json!("1/1/10")), 1.0);
        assert_eq!(date(&json!("Jan. 2, 2010"), &json!("2010-01-01")), 0.0);
        assert_eq!(date(&json!("2006-09-01; 2007-08-31"), &json!("09/01/2006; 8/31/2007")), 1.0);
    }

    #[test]
    fn date_matcher_falls_back_to_exact() {
        assert_eq!(date(&json!("Perpetual"), &json!("perpetual")), 1.0);
        assert_eq!(date(&json!("[]/[]/2020"), &json!("[]/[]/2020")), 1.0);
        assert_eq!(date(&json!("[]/[]/2021"), &json!("[]/[]/2020")), 0.0);
        assert_eq!(date(&json!("2010-01-01"), &json!("perpetual")), 0.0);
    }

    #[test]
    fn date_matcher_reads_numeric_dates_in_the_fields_order() {
        let day_first = MatchRule::Date { day_first: true };
        let month_first = MatchRule::Date { day_first: false };
        // 25/03/2020 is only a date day first; 04/03/2020 is 4 March day first, 3 April month first.
        assert_eq!(score_values(&day_first, &json!("2020-03-25"), &json!("25/03/2020")), 1.0);
        assert_eq!(score_values(&day_first, &json!("4 March 2020"), &json!("04/03/2020")), 1.0);
        assert_eq!(score_values(&day_first, &json!("2020-04-03"), &json!("04/03/2020")), 0.0);
        assert_eq!(score_values(&month_first, &json!("2020-04-03"), &json!("04/03/2020")), 1.0);
        assert_eq!(score_values(&month_first, &json!("4 March 2020"), &json!("04/03/2020")), 0.0);
        // Month first, 25/03/2020 is no date: compared as text.
        assert_eq!(score_values(&month_first, &json!("2020-03-25"), &json!("25/03/2020")), 0.0);
        assert_eq!(score_values(&month_first, &json!("25/03/2020"), &json!("25/03/2020")), 1.0);
        // Both sides are read in the same order.
        assert_eq!(score_values(&day_first, &json!("04/03/2020"), &json!("4.3.2020")), 1.0);
        assert_eq!(date(&json!("04/03/2020"), &json!("2020-04-03")), 1.0, "`date` alone is month first");
    }

    #[test]
    fn text_similarity_of_free_text() {
        let sim = text_similarity;
        assert_eq!(sim("John Smith", "JOHN  SMITH."), 1.0);
        assert_eq!(sim("Smith, John", "John Smith"), 1.0, "word order does not count");
        assert!((sim("Jon Smith", "John Smith") - f64::midpoint(1.0, strsim::jaro_winkler("jon", "john"))).abs() < 1e-12);
        assert!(sim("Jon Smith", "John Smith") > 0.95);
        assert_eq!(sim("Jane Smith", "John Smith"), 0.5, "another first name: half the words");
        // Abbreviations are prefixes; numbers match exactly or not at all.
        assert!((sim("12 Main St, Springfield", "12 Main Street, Springfield") - 3.9 / 4.0).abs() < 1e-12);
        assert_eq!(sim("14 Main Street", "12 Main Street"), 2.0 / 3.0);
        assert_eq!(sim("invoice 1", "invoice 2"), 0.5);
        // A missing word costs its share of the F1.
        assert_eq!(sim("1 Infinite Loop, Cupertino", "1 Infinite Loop, Cupertino, CA"), 8.0 / 9.0);
        assert_eq!(sim("", "x"), 0.0);
        assert_eq!(sim("", ""), 1.0);
        assert_eq!(word_similarity("s", "street"), 0.0, "a one-letter prefix is not enough");
    }

    #[test]
    fn text_matcher_scores_the_similarity_above_the_threshold() {
        let rule = MatchRule::Text { fuzzy: 0.8 };
        assert_eq!(score_values(&rule, &json!("123 main street"), &json!("123 Main Street")), 1.0);
        let near = score_values(&rule, &json!("Jon Smith"), &json!("John Smith"));
        assert!(near > 0.95 && near < 1.0, "{near}");
        assert_eq!(score_values(&rule, &json!("Jane Smith"), &json!("John Smith")), 0.0, "0.5 is below 0.8");
        assert_eq!(score_values(&MatchRule::Text { fuzzy: 0.4 }, &json!("Jane Smith"), &json!("John Smith")), 0.5);
        assert_eq!(score_values(&MatchRule::Text { fuzzy: 1.0 }, &json!("Jon Smith"), &json!("John Smith")), 0.0);
        assert_eq!(score_values(&rule, &json!(12), &json!("12")), 1.0);
    }

    #[test]
    fn enum_matcher() {
        assert_eq!(enum_eq(&json!(" yes "), &json!("Yes")), 1.0);
        assert_eq!(enum_eq(&json!("No"), &json!("Yes")), 0.0);
        assert_eq!(enum_eq(&json!("Y"), &json!("Yes")), 0.0);
        assert_eq!(enum_eq(&json!(true), &json!("true")), 1.0);
    }

    #[test]
    fn number_matcher() {
        assert_eq!(number(&json!(5), &json!(5.0), 1e-6), 1.0);
        assert_eq!(number(&json!("$1,200"), &json!(1200), 1e-6), 1.0);
        assert_eq!(number(&json!("15%"), &json!("15"), 1e-6), 1.0);
        assert_eq!(number(&json!(1.004), &json!(1.0), 0.01), 1.0);
        assert_eq!(number(&json!(1.02), &json!(1.0), 0.01), 0.0);
        assert_eq!(number(&json!("ten"), &json!("Ten"), 0.01), 1.0, "falls back to exact");
        assert_eq!(number(&json!("ten"), &json!(10), 0.01), 0.0);
        assert_eq!(parse_number(&json!("NaN")), None);
        assert_eq!(parse_number(&json!(" 1 000 ")), Some(1000.0));
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn item_key_drops_alias() {
        assert_eq!(item_key("Rogers Cable Communications Inc. (\"Rogers\")"), "rogers cable communications inc");
        assert_eq!(item_key("(\"Company\")"), "company");
        assert_eq!(item_key("Acme Corp (unbalanced"), "acme corp");
    }

    #[test]
    fn list_matches_aliases_and_case() {
        let expected = strings(&["Rogers Cable Communications Inc. (\"Rogers\")", "Shaw Inc. (\"Shaw\")"]);
        let predicted = strings(&["ROGERS CABLE COMMUNICATIONS, INC.", "Shaw Inc."]);
        let m = list_match(&predicted, &expected, 0.85);
        assert_eq!(m.matched, 2);
        assert_eq!(m.f1, 1.0);
        let m = list_match(&strings(&["Rogers Cable Communications Inc."]), &expected, 0.85);
        assert_eq!((m.precision, m.recall), (1.0, 0.5));
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn list_fuzzy_threshold() {
        let expected = strings(&["Stallings Capital Group Consultants, Ltd."]);
        let typo = strings(&["Stallings Capital Group Consultant Ltd"]);
        assert_eq!(list_match(&typo, &expected, 0.85).f1, 1.0);
        assert_eq!(list_match(&typo, &expected, 1.0).f1, 0.0);
        assert_eq!(list_match(&strings(&["GAINSCO, INC."]), &expected, 0.85).f1, 0.0);
    }

    #[test]
    fn list_greedy_one_to_one() {
        // Repeating one party (a looping model) matches it once; the copies cost precision.
        let expected = strings(&["Acme Inc.", "Beta LLC"]);
        let looped = strings(&["Acme Inc.", "Acme Inc.", "Acme Inc.", "Acme Inc."]);
        let m = list_match(&looped, &expected, 0.85);
        assert_eq!(m.matched, 1);
        assert_eq!((m.precision, m.recall), (0.25, 0.5));
        // The best pair wins even when a worse pair is listed first.
        let expected = strings(&["Company Alpha", "Company Alphas"]);
        let predicted = strings(&["Company Alphas"]);
        let m = list_match(&predicted, &expected, 0.85);
        assert_eq!(m.matched, 1);
        assert_eq!(m.recall, 0.5);
        assert_eq!(list_match(&[], &[], 0.85).f1, 1.0);
        assert_eq!(list_match(&[], &expected, 0.85).f1, 0.0);
    }

    #[test]
    fn list_items_from_values() {
        assert_eq!(items(&json!(["A", "", null, "B"])), strings(&["A", "B"]));
        assert_eq!(items(&json!("Acme")), strings(&["Acme"]));
        assert!(items(&json!(null)).is_empty());
        assert_eq!(score_values(&MatchRule::List { fuzzy: 0.85 }, &json!(["acme inc"]), &json!(["Acme, Inc. (\"Acme\")"])), 1.0);
    }

    #[test]
    fn empty_values() {
        for v in [json!(null), json!(""), json!("  "), json!([]), json!([""]), json!({})] {
            assert!(is_empty_value(&v), "{v}");
        }
        for v in [json!("x"), json!(0), json!(false), json!(["x"])] {
            assert!(!is_empty_value(&v), "{v}");
        }
    }
}

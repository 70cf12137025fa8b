//! Prompts under optimization: a base instruction plus worked examples (demos) drawn from
//! train, and how they render for one example.
//!
//! A demo is never shown with the example it came from: [`Prompt::render_for`] drops the demo
//! whose id is the example being scored, so that example sees a slightly different instruction
//! (and gets its own cache key).
//!
//! The demos' header and excerpt lines name the document by the task's [`Framing`] label.

use serde::{Deserialize, Serialize};

pub use crate::fingerprint::sha256_hex;
use crate::task::{Example, Framing};

/// Characters of a document a demo shows.
pub const EXCERPT_CHARS: usize = 1200;

/// One worked example: a train example's id, an excerpt of its text and its gold JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demo {
    pub id: String,
    pub excerpt: String,
    /// `expected`, as compact JSON.
    pub expected: String,
}

impl Demo {
    /// A demo of `example`: the first [`EXCERPT_CHARS`] characters of its text (cut on a char
    /// boundary) and its expected JSON.
    pub fn from_example(example: &Example) -> Self {
        Demo {
            id: example.id.clone(),
            excerpt: excerpt(&example.text, EXCERPT_CHARS),
            expected: serde_json::to_string(&example.expected).unwrap_or_else(|_| "null".into()),
        }
    }
}

/// Characters of context kept on each side of a gold value in an evidence excerpt.
pub const EVIDENCE_PAD_CHARS: usize = 160;

impl Demo {
    /// A demo of `example` whose excerpt is centred on its evidence (see [`evidence_excerpt`]),
    /// at most [`EXCERPT_CHARS`] characters of the document.
    pub fn around_evidence(example: &Example) -> Self {
        Demo {
            id: example.id.clone(),
            excerpt: evidence_excerpt(&example.text, &example.expected, EXCERPT_CHARS),
            expected: serde_json::to_string(&example.expected).unwrap_or_else(|_| "null".into()),
        }
    }
}

/// At most `max` characters of `text` that show where the gold values are: the head of the
/// document (a third of `max`: titles and parties are usually there) and a window of
/// [`EVIDENCE_PAD_CHARS`] on each side of the first place each gold value occurs (see
/// [`crate::score::feedback::find`]), taken in field order until `max` is used, then put in
/// document order, overlapping windows merged, gaps shown as "[...]". The whole text when it
/// is short enough; the head alone when no gold value is in it.
pub fn evidence_excerpt(text: &str, expected: &serde_json::Value, max: usize) -> String {
    let starts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    let n = starts.len();
    if n <= max {
        return text.to_owned();
    }
    let char_at = |byte: usize| starts.partition_point(|&b| b < byte);
    let byte_at = |ch: usize| starts.get(ch).copied().unwrap_or(text.len());
    let mut wanted = vec![(0, max / 3)];
    for value in crate::score::feedback::strings(expected) {
        if value.trim().chars().count() < crate::score::feedback::MIN_NEEDLE_CHARS {
            continue;
        }
        if let Some((s, e)) = crate::score::feedback::find(text, &value) {
            wanted.push((char_at(s).saturating_sub(EVIDENCE_PAD_CHARS), (char_at(e) + EVIDENCE_PAD_CHARS).min(n)));
        }
    }
    // Budget in field order (the head first), counting only characters not already taken.
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut used = 0;
    for (s, e) in wanted {
        let new = (s..e).filter(|&c| !taken.iter().any(|&(ts, te)| (ts..te).contains(&c))).count();
        if new == 0 {
            continue;
        }
        if used + new > max {
            let room = max - used;
            if room >= EVIDENCE_PAD_CHARS {
                taken.push((s, (s + room).min(e)));
            }
            break;
        }
        taken.push((s, e));
        used += new;
    }
    taken.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (s, e) in taken {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = String::new();
    for (i, (s, e)) in merged.iter().enumerate() {
        if i > 0 || *s > 0 {
            out.push_str(if i == 0 { "[...]\n" } else { "\n[...]\n" });
        }
        out.push_str(text[byte_at(*s)..byte_at(*e)].trim());
    }
    if merged.last().is_some_and(|(_, e)| *e < n) {
        out.push_str("\n[...]");
    }
    out
}

/// The first `max` characters of `text`, cut on a char boundary, "[...]" when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}\n[...]", text[..cut].trim_end()),
    }
}

/// An instruction: the task's prompt plus accumulated demos, framed as the task frames its
/// documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub base: String,
    pub demos: Vec<Demo>,
    pub framing: Framing,
}

impl Prompt {
    /// `base` without demos; demos added later render under `framing` (the task's).
    pub fn new(base: impl Into<String>, framing: Framing) -> Self {
        Prompt { base: base.into(), demos: Vec::new(), framing }
    }

    /// The full text, every demo included (what `best_prompt.txt` holds).
    pub fn text(&self) -> String {
        render(&self.base, &self.framing, self.demos.iter())
    }

    /// The instruction shown when scoring example `id`: its own demo left out.
    pub fn render_for(&self, id: &str) -> String {
        render(&self.base, &self.framing, self.demos.iter().filter(|d| d.id != id))
    }

    /// SHA-256 of [`Prompt::text`].
    pub fn sha256(&self) -> String {
        sha256_hex(self.text().as_bytes())
    }

    /// Ids of the demos, in order.
    pub fn demo_ids(&self) -> Vec<String> {
        self.demos.iter().map(|d| d.id.clone()).collect()
    }

    /// The prompt whose [`Prompt::text`] is `text`, given its demos' ids in order (what a
    /// `candidate` record holds): the inverse of rendering, checked by rendering back. `None`
    /// when `text` is not such a rendering. The base comes back with its trailing whitespace
    /// trimmed (rendering drops it when there are demos). The framing is read from the first
    /// demo's excerpt line; without demos it is the default one (it does not show in the text).
    pub fn parse(text: &str, demo_ids: &[String]) -> Option<Prompt> {
        if demo_ids.is_empty() {
            return Some(Prompt::new(text, Framing::default()));
        }
        let body = text.strip_suffix('\n')?;
        // The header names the framing, which the first demo's excerpt line gives: try each
        // "\nExample 1\n" in turn (a base may hold one too).
        let first = "\nExample 1\n";
        let mut from = 0;
        while let Some(at) = body[from..].find(first).map(|i| from + i) {
            from = at + 1;
            let after = &body[at + first.len()..];
            let Some(framing) = after.split_once('\n').and_then(|(line, _)| Framing::from_excerpt_head(line)) else {
                continue;
            };
            let header = framing.demos_header();
            let Some(base) = body[..at].strip_suffix(header.as_str()) else {
                continue;
            };
            if let Some(prompt) = parse_demos(text, base, &body[at..], demo_ids, framing) {
                return Some(prompt);
            }
        }
        None
    }
}

/// The demos of a rendering whose base is `base` and whose demo blocks are `rest`.
fn parse_demos(text: &str, base: &str, mut rest: &str, demo_ids: &[String], framing: Framing) -> Option<Prompt> {
    let marker = |n: usize| demo_marker(&framing, n);
    let mut demos = Vec::with_capacity(demo_ids.len());
    for (i, id) in demo_ids.iter().enumerate() {
        rest = rest.strip_prefix(marker(i + 1).as_str())?;
        // A demo's block ends with its newline; the next block starts with one.
        let end = if i + 1 == demo_ids.len() { rest.len() } else { rest.find(&format!("\n{}", marker(i + 2)))? + 1 };
        let block = rest[..end].strip_suffix('\n')?;
        rest = &rest[end..];
        // Compact JSON holds no newline, so the last "\nJSON: " starts it.
        let cut = block.rfind("\nJSON: ")?;
        demos.push(Demo { id: id.clone(), excerpt: block[..cut].to_owned(), expected: block[cut + 7..].to_owned() });
    }
    // More demos than ids: the last block would hold the next one's marker.
    let more = format!("\n{}", marker(demo_ids.len() + 1));
    if demos.last().is_some_and(|d| d.excerpt.contains(&more)) {
        return None;
    }
    let prompt = Prompt { base: base.to_owned(), demos, framing };
    (rest.is_empty() && prompt.text() == text).then_some(prompt)
}

fn demo_marker(framing: &Framing, n: usize) -> String {
    format!("\nExample {n}\n{}\n", framing.excerpt_head())
}

/// The base unchanged when there is no demo (so the baseline is exactly the task's prompt).
fn render<'a>(base: &str, framing: &Framing, demos: impl Iterator<Item = &'a Demo>) -> String {
    use std::fmt::Write as _;
    let mut demos = demos.peekable();
    if demos.peek().is_none() {
        return base.to_owned();
    }
    let mut out = base.trim_end().to_owned();
    for (i, d) in demos.enumerate() {
        if i == 0 {
            out.push_str(&framing.demos_header());
        }
        let _ = write!(out, "{}{}\nJSON: {}\n", demo_marker(framing, i + 1), d.excerpt, d.expected);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(id: &str, text: &str) -> Example {
        Example { id: id.into(), text: text.into(), expected: serde_json::json!({"a": id}), line: 1 }
    }

    #[test]
    fn an_evidence_excerpt_shows_the_head_and_each_gold_value_in_document_order() {
        let filler = |c: char| std::iter::repeat_n(c, 3000).collect::<String>();
        let text = format!(
            "TITLE AGREEMENT {} governed by the laws of Ohio. {} Dated é 2020. {}",
            filler('a'),
            filler('b'),
            filler('c')
        );
        let expected = serde_json::json!({"law": "Ohio", "title": "Title Agreement", "none": null, "x": "zz"});
        let e = evidence_excerpt(&text, &expected, EXCERPT_CHARS);
        assert!(e.starts_with("TITLE AGREEMENT"), "{e}");
        assert!(e.contains("governed by the laws of Ohio."), "{e}");
        assert!(e.ends_with("\n[...]"));
        // Head, one gap, the window around Ohio: two pieces.
        assert_eq!(e.matches("[...]").count(), 2, "{e}");
        assert!(e.chars().count() <= EXCERPT_CHARS + 20);
        // Not found: the head alone, as a head excerpt would be but a third as long.
        let head = evidence_excerpt(&text, &serde_json::json!({"law": "Texas"}), EXCERPT_CHARS);
        assert_eq!(head.chars().count(), EXCERPT_CHARS / 3 + "\n[...]".len());
        // Multibyte text near a window's edge stays on char boundaries; short text comes whole.
        let accents = format!("{}Ohio{}", "é".repeat(500), "ü".repeat(2000));
        assert!(evidence_excerpt(&accents, &serde_json::json!({"law": "Ohio"}), 900).contains("Ohio"));
        assert_eq!(evidence_excerpt("short Ohio", &serde_json::json!({"law": "Ohio"}), 900), "short Ohio");
    }

    #[test]
    fn excerpt_cuts_on_char_boundaries() {
        let text = "é".repeat(2000);
        let e = excerpt(&text, EXCERPT_CHARS);
        assert!(e.starts_with(&"é".repeat(1200)) && e.ends_with("[...]"));
        assert_eq!(excerpt("short", 10), "short");
    }

    #[test]
    fn rendering_leaves_out_the_scored_example() {
        let mut p = Prompt::new("Extract.", Framing::default());
        p.demos = vec![Demo::from_example(&ex("a", "alpha text")), Demo::from_example(&ex("b", "beta text"))];
        let full = p.text();
        assert!(full.contains("alpha text") && full.contains("beta text") && full.contains(r#"{"a":"b"}"#));
        let for_a = p.render_for("a");
        assert!(!for_a.contains("alpha text") && for_a.contains("beta text"));
        assert_ne!(sha256_hex(for_a.as_bytes()), sha256_hex(full.as_bytes()));
        assert_eq!(p.render_for("zzz"), full);
        assert_eq!(Prompt::new("Extract. ", Framing::default()).render_for("a"), "Extract. ");
    }

    #[test]
    fn parsing_inverts_rendering() {
        let mut p = Prompt::new("Extract.\n", Framing::default());
        let tricky = Example {
            id: "c".into(),
            text: "x\nJSON: no\nExample 2\nDocument (excerpt):\nnot a marker".into(),
            expected: serde_json::json!({"a": "line\nbreak"}),
            line: 1,
        };
        p.demos =
            vec![Demo::from_example(&ex("a", "alpha text")), Demo::from_example(&tricky), Demo::from_example(&ex("b", "beta"))];
        let ids = p.demo_ids();
        let back = Prompt::parse(&p.text(), &ids).unwrap();
        assert_eq!(back.text(), p.text());
        assert_eq!(back.demos, p.demos);
        assert_eq!(back.base, "Extract.");
        assert_eq!(back.render_for("c"), p.render_for("c"));
        assert_eq!(Prompt::parse("plain", &[]).unwrap().text(), "plain");
        assert!(Prompt::parse("plain\n", &ids).is_none());
        assert!(Prompt::parse(&p.text(), &ids[..2]).is_none());
    }

    #[test]
    fn demos_render_and_parse_under_any_framing() {
        for label in ["Support ticket #", "", "Excerpt", "Document"] {
            let framing = Framing::new(label).unwrap();
            let mut p = Prompt::new("Extract.\nExample 1\nNot a demo.", framing.clone());
            p.demos = vec![Demo::from_example(&ex("a", "alpha")), Demo::from_example(&ex("b", "beta"))];
            let text = p.text();
            assert!(text.contains(&format!("\nExample 2\n{}\nbeta\nJSON: ", framing.excerpt_head())), "{text}");
            assert!(text.contains(&framing.demos_header()), "{text}");
            let back = Prompt::parse(&text, &p.demo_ids()).unwrap_or_else(|| panic!("{label:?}: {text}"));
            assert_eq!(back, p, "{label:?}");
        }
        let none = Framing::new("").unwrap();
        let mut p = Prompt::new("Extract.", none);
        p.demos = vec![Demo::from_example(&ex("a", "alpha"))];
        assert_eq!(
            p.text(),
            "Extract.\n\nWorked examples (an excerpt, then the JSON to output for it):\n\nExample 1\nExcerpt:\nalpha\nJSON: {\"a\":\"a\"}\n\n"
        );
    }
}

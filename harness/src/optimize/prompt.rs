//! Prompts under optimization: a base instruction plus worked examples (demos) drawn from
//! train, and how they render for one example.
//!
//! A demo is never shown with the example it came from: [`Prompt::render_for`] drops the demo
//! whose id is the example being scored, so that example sees a slightly different instruction
//! (and gets its own cache key).

use serde::{Deserialize, Serialize};

pub use crate::fingerprint::sha256_hex;
use crate::task::Example;

/// Characters of a contract a demo shows.
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

/// The first `max` characters of `text`, cut on a char boundary, "[...]" when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}\n[...]", text[..cut].trim_end()),
    }
}

/// An instruction: the task's prompt plus accumulated demos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub base: String,
    pub demos: Vec<Demo>,
}

impl Prompt {
    pub fn new(base: impl Into<String>) -> Self {
        Prompt { base: base.into(), demos: Vec::new() }
    }

    /// The full text, every demo included (what `best_prompt.txt` holds).
    pub fn text(&self) -> String {
        render(&self.base, self.demos.iter())
    }

    /// The instruction shown when scoring example `id`: its own demo left out.
    pub fn render_for(&self, id: &str) -> String {
        render(&self.base, self.demos.iter().filter(|d| d.id != id))
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
    /// trimmed (rendering drops it when there are demos).
    pub fn parse(text: &str, demo_ids: &[String]) -> Option<Prompt> {
        if demo_ids.is_empty() {
            return Some(Prompt::new(text));
        }
        let body = text.strip_suffix('\n')?;
        let start = body.find(DEMOS_HEADER)?;
        let base = &body[..start];
        let mut rest = &body[start + DEMOS_HEADER.len()..];
        let mut demos = Vec::with_capacity(demo_ids.len());
        for (i, id) in demo_ids.iter().enumerate() {
            rest = rest.strip_prefix(demo_marker(i + 1).as_str())?;
            // A demo's block ends with its newline; the next block starts with one.
            let end = if i + 1 == demo_ids.len() { rest.len() } else { rest.find(&format!("\n{}", demo_marker(i + 2)))? + 1 };
            let block = rest[..end].strip_suffix('\n')?;
            rest = &rest[end..];
            // Compact JSON holds no newline, so the last "\nJSON: " starts it.
            let cut = block.rfind("\nJSON: ")?;
            demos.push(Demo { id: id.clone(), excerpt: block[..cut].to_owned(), expected: block[cut + 7..].to_owned() });
        }
        // More demos than ids: the last block would hold the next one's marker.
        let more = format!("\n{}", demo_marker(demo_ids.len() + 1));
        if demos.last().is_some_and(|d| d.excerpt.contains(&more)) {
            return None;
        }
        let prompt = Prompt { base: base.to_owned(), demos };
        (rest.is_empty() && prompt.text() == text).then_some(prompt)
    }
}

const DEMOS_HEADER: &str = "\n\nWorked examples (a contract excerpt, then the JSON to output for that contract):\n";

fn demo_marker(n: usize) -> String {
    format!("\nExample {n}\nContract (excerpt):\n")
}

/// The base unchanged when there is no demo (so the baseline is exactly the task's prompt).
fn render<'a>(base: &str, demos: impl Iterator<Item = &'a Demo>) -> String {
    use std::fmt::Write as _;
    let mut demos = demos.peekable();
    if demos.peek().is_none() {
        return base.to_owned();
    }
    let mut out = base.trim_end().to_owned();
    for (i, d) in demos.enumerate() {
        if i == 0 {
            out.push_str(DEMOS_HEADER);
        }
        let _ = write!(out, "{}{}\nJSON: {}\n", demo_marker(i + 1), d.excerpt, d.expected);
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
    fn excerpt_cuts_on_char_boundaries() {
        let text = "é".repeat(2000);
        let e = excerpt(&text, EXCERPT_CHARS);
        assert!(e.starts_with(&"é".repeat(1200)) && e.ends_with("[...]"));
        assert_eq!(excerpt("short", 10), "short");
    }

    #[test]
    fn rendering_leaves_out_the_scored_example() {
        let mut p = Prompt::new("Extract.");
        p.demos = vec![Demo::from_example(&ex("a", "alpha text")), Demo::from_example(&ex("b", "beta text"))];
        let full = p.text();
        assert!(full.contains("alpha text") && full.contains("beta text") && full.contains(r#"{"a":"b"}"#));
        let for_a = p.render_for("a");
        assert!(!for_a.contains("alpha text") && for_a.contains("beta text"));
        assert_ne!(sha256_hex(for_a.as_bytes()), sha256_hex(full.as_bytes()));
        assert_eq!(p.render_for("zzz"), full);
        assert_eq!(Prompt::new("Extract. ").render_for("a"), "Extract. ");
    }

    #[test]
    fn parsing_inverts_rendering() {
        let mut p = Prompt::new("Extract.\n");
        let tricky = Example {
            id: "c".into(),
            text: "x\nJSON: no\nExample 2\nContract (excerpt):\nnot a marker".into(),
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
}

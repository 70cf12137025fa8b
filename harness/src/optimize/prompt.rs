//! Prompts under optimization: a base instruction plus worked examples (demos) drawn from
//! train, and how they render for one example.
//!
//! A demo is never shown with the example it came from: [`Prompt::render_for`] drops the demo
//! whose id is the example being scored, so that example sees a slightly different instruction
//! (and gets its own cache key).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
            out.push_str("\n\nWorked examples (a contract excerpt, then the JSON to output for that contract):\n");
        }
        let _ = write!(out, "\nExample {}\nContract (excerpt):\n{}\nJSON: {}\n", i + 1, d.excerpt, d.expected);
    }
    out.push('\n');
    out
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
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
}

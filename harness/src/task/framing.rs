//! How a task's document is framed in the model's prompt: the `document-label` of `task.toml`.
//!
//! The document goes into the prompt as `"{label}:\n\n{document}"`, and a demo shows an excerpt
//! of a train document under `"{label} (excerpt):"`. An empty label means no head at all: the
//! document alone, and demos under `"Excerpt:"`. The default label is `"Document"`; the CUAD
//! tasks set `"Contract"`.

use serde::{Deserialize, Serialize};

/// The label used when `task.toml` has no `document-label`.
pub const DEFAULT_DOCUMENT_LABEL: &str = "Document";

/// The framing of documents in prompts; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Framing {
    label: String,
}

impl Default for Framing {
    fn default() -> Self {
        Framing { label: DEFAULT_DOCUMENT_LABEL.to_owned() }
    }
}

impl Framing {
    /// The framing with `label` (may be empty: no head).
    ///
    /// # Errors
    /// The label holds a line break (it must stay on the line before the document).
    pub fn new(label: impl Into<String>) -> Result<Framing, String> {
        let label = label.into();
        if label.contains(['\n', '\r']) {
            return Err(format!("must be one line (no line break), got {label:?}"));
        }
        Ok(Framing { label })
    }

    /// The label as configured ("" = no head).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// What goes before the document: `"{label}:\n\n"`, or nothing for an empty label.
    pub fn head(&self) -> String {
        if self.label.is_empty() {
            String::new()
        } else {
            format!("{}:\n\n", self.label)
        }
    }

    /// Bytes of [`Self::head`].
    pub fn head_len(&self) -> usize {
        if self.label.is_empty() {
            0
        } else {
            self.label.len() + 3
        }
    }

    /// The document with its head.
    pub fn document(&self, document: &str) -> String {
        format!("{}{document}", self.head())
    }

    /// The line that introduces a demo's excerpt: `"{label} (excerpt):"`, or `"Excerpt:"`.
    pub fn excerpt_head(&self) -> String {
        if self.label.is_empty() {
            "Excerpt:".to_owned()
        } else {
            format!("{} (excerpt):", self.label)
        }
    }

    /// The framing whose [`Self::excerpt_head`] is `line` (the inverse), if any.
    pub fn from_excerpt_head(line: &str) -> Option<Framing> {
        if line == "Excerpt:" {
            return Some(Framing { label: String::new() });
        }
        line.strip_suffix(" (excerpt):").and_then(|label| Framing::new(label).ok())
    }

    /// The header above the demos: "(a contract excerpt, then the JSON to output for that
    /// contract)" with the label as a noun (first letter lower-cased unless it is an acronym).
    pub fn demos_header(&self) -> String {
        if self.label.is_empty() {
            return "\n\nWorked examples (an excerpt, then the JSON to output for it):\n".to_owned();
        }
        let mut chars = self.label.chars();
        let first = chars.next().unwrap_or(' ');
        let acronym = first.is_uppercase() && chars.next().is_some_and(char::is_uppercase);
        let noun =
            if acronym { self.label.clone() } else { format!("{}{}", first.to_lowercase(), &self.label[first.len_utf8()..]) };
        let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
        format!("\n\nWorked examples ({article} {noun} excerpt, then the JSON to output for that {noun}):\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_for_labels() {
        let f = Framing::default();
        assert_eq!(f.label(), "Document");
        assert_eq!(f.document("x"), "Document:\n\nx");
        assert_eq!(f.head_len(), f.head().len());
        assert_eq!(f.excerpt_head(), "Document (excerpt):");
        assert_eq!(f.demos_header(), "\n\nWorked examples (a document excerpt, then the JSON to output for that document):\n");

        let none = Framing::new("").unwrap();
        assert_eq!(none.document("x"), "x");
        assert_eq!((none.head_len(), none.head().as_str()), (0, ""));
        assert_eq!(none.excerpt_head(), "Excerpt:");

        let ticket = Framing::new("Support ticket #").unwrap();
        assert_eq!(ticket.head_len(), ticket.head().len());
        assert_eq!(ticket.document("x"), "Support ticket #:\n\nx");
        assert!(ticket.demos_header().contains("(a support ticket # excerpt,"));
        assert!(Framing::new("Email").unwrap().demos_header().contains("(an email excerpt,"));
        assert!(Framing::new("SEC filing").unwrap().demos_header().contains("(a SEC filing excerpt,"));
        assert!(Framing::new("Résumé").unwrap().demos_header().contains("for that résumé)"));
    }

    #[test]
    fn excerpt_heads_invert() {
        for label in ["", "Document", "Support ticket #", "Excerpt", "x (excerpt)"] {
            let f = Framing::new(label).unwrap();
            assert_eq!(Framing::from_excerpt_head(&f.excerpt_head()), Some(f), "{label:?}");
        }
        assert_eq!(Framing::from_excerpt_head("Document:"), None);
    }

    #[test]
    fn line_breaks_are_refused() {
        assert!(Framing::new("Two\nlines").unwrap_err().contains("line break"));
        assert!(Framing::new("cr\r").is_err());
    }
}

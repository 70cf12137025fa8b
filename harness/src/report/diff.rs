//! The prompt diff, baseline -> best: a line diff (`similar`) with the changed words of each
//! changed line highlighted, as an HTML table or a unified diff for Markdown.

use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use super::escape;

/// Lines removed and added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    pub removed: usize,
    pub added: usize,
}

/// Counts of the line diff.
pub fn stats(old: &str, new: &str) -> DiffStats {
    let diff = TextDiff::from_lines(old, new);
    let mut s = DiffStats::default();
    for c in diff.iter_all_changes() {
        match c.tag() {
            ChangeTag::Delete => s.removed += 1,
            ChangeTag::Insert => s.added += 1,
            ChangeTag::Equal => {}
        }
    }
    s
}

/// An HTML table: one row per line (old and new line numbers, `-`/`+`, the text), words that
/// changed within a changed line in `<mark>`; runs of unchanged lines beyond `context` lines
/// of a change folded into one row.
pub fn html(old: &str, new: &str, context: usize) -> String {
    let diff = TextDiff::from_lines(old, new);
    let mut out = String::from("<table class=\"diff\">\n");
    let groups = diff.grouped_ops(context);
    if groups.is_empty() {
        out.push_str(
            "<tr><td class=\"ln\"></td><td class=\"ln\"></td><td class=\"sign\"></td><td class=\"code\">(identical)</td></tr>\n",
        );
    }
    for (gi, group) in groups.iter().enumerate() {
        if gi > 0 {
            out.push_str("<tr class=\"fold\"><td class=\"ln\">⋯</td><td class=\"ln\">⋯</td><td class=\"sign\"></td><td class=\"code\">unchanged lines</td></tr>\n");
        }
        for op in group {
            for change in diff.iter_inline_changes(op) {
                let (class, sign) = match change.tag() {
                    ChangeTag::Delete => ("del", "-"),
                    ChangeTag::Insert => ("ins", "+"),
                    ChangeTag::Equal => ("eq", " "),
                };
                let ln = |n: Option<usize>| n.map(|n| (n + 1).to_string()).unwrap_or_default();
                let mut code = String::new();
                for (emph, value) in change.iter_strings_lossy() {
                    let text = escape(value.trim_end_matches('\n'));
                    if emph && change.tag() != ChangeTag::Equal {
                        let _ = write!(code, "<mark>{text}</mark>");
                    } else {
                        code.push_str(&text);
                    }
                }
                let _ = writeln!(
                    out,
                    "<tr class=\"{class}\"><td class=\"ln\">{}</td><td class=\"ln\">{}</td><td class=\"sign\">{sign}</td><td class=\"code\">{code}</td></tr>",
                    ln(change.old_index()),
                    ln(change.new_index())
                );
            }
        }
    }
    out.push_str("</table>\n");
    out
}

/// A unified diff (for a fenced `diff` block).
pub fn unified(old: &str, new: &str, context: usize) -> String {
    TextDiff::from_lines(old, new).unified_diff().context_radius(context).header("baseline", "best").to_string()
}

//! The CUAD tasks' `document-label = "Contract"` renders prompts byte for byte as they were
//! rendered before the label was a task setting (when "Contract" was written into the code):
//! the same messages, prefix boundaries and demo texts, hence the same cache keys. The legacy
//! renderings are spelled out below as they were.

use std::fmt::Write as _;

use harness::eval::PromptSpec;
use harness::optimize::prompt::{Demo, Prompt};
use harness::task::{Layout, Task};

use crate::support::repo;

/// `PromptSpec::messages` before `document-label`.
fn legacy_messages(instruction: &str, layout: Layout, document: &str) -> Vec<(String, String)> {
    match layout {
        Layout::InstructionFirst => {
            vec![("system".into(), instruction.to_owned()), ("user".into(), format!("Contract:\n\n{document}"))]
        }
        Layout::DocumentFirst => vec![("user".into(), format!("Contract:\n\n{document}\n\n---\n\n{instruction}"))],
    }
}

/// `Prompt::text` before `document-label`.
fn legacy_text(base: &str, demos: &[Demo]) -> String {
    if demos.is_empty() {
        return base.to_owned();
    }
    let mut out = base.trim_end().to_owned();
    out.push_str("\n\nWorked examples (a contract excerpt, then the JSON to output for that contract):\n");
    for (i, d) in demos.iter().enumerate() {
        let _ = write!(out, "\nExample {}\nContract (excerpt):\n{}\nJSON: {}\n", i + 1, d.excerpt, d.expected);
    }
    out.push('\n');
    out
}

#[test]
fn cuad_prompts_render_as_before_the_document_label() {
    for name in ["cuad-mini", "cuad"] {
        let task = Task::load(&repo().join("evals").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut checked = 0;
        for split in task.splits.values() {
            for ex in &split.examples {
                for layout in [Layout::InstructionFirst, Layout::DocumentFirst] {
                    let spec = PromptSpec { instruction: &task.prompt, layout, framing: &task.framing };
                    let got: Vec<(String, String)> = spec.messages(&ex.text).into_iter().map(|m| (m.role, m.content)).collect();
                    assert_eq!(got, legacy_messages(&task.prompt, layout, &ex.text), "{name} {}", ex.id);
                    let legacy_prefix = (layout == Layout::DocumentFirst).then(|| (0, "Contract:\n\n".len() + ex.text.len()));
                    assert_eq!(spec.reusable_prefix(&ex.text), legacy_prefix, "{name} {}", ex.id);
                }
                checked += 1;
            }
        }
        assert!(checked >= 38, "{name}: {checked} examples");

        // Demos: three train examples, rendered in full and for one of them.
        let train = &task.split("train").unwrap().examples;
        let mut prompt = Prompt::new(task.prompt.clone(), task.framing.clone());
        assert_eq!(prompt.text(), task.prompt, "{name}: no demos, the task's prompt unchanged");
        prompt.demos = train.iter().take(3).map(Demo::from_example).collect();
        assert_eq!(prompt.text(), legacy_text(&task.prompt, &prompt.demos), "{name}");
        assert_eq!(
            prompt.render_for(&train[1].id),
            legacy_text(&task.prompt, &[prompt.demos[0].clone(), prompt.demos[2].clone()])
        );
        let back = Prompt::parse(&prompt.text(), &prompt.demo_ids()).expect("parses");
        assert_eq!(back.framing, task.framing);
        assert_eq!(back.text(), prompt.text());
    }
}

//! Tests of the `edits` proposer: the tally from verdicts with evidence, the edits chosen per
//! failure class, cue words, format hints from the schema, applying and removing guidance lines.

use serde_json::{json, Value};

use super::*;
use crate::optimize::proposers::demos::tests::record;
use crate::score::{feedback, score_example};
use crate::task::Framing;

/// A task with a date, a list and an enum field, documents framed as "Lease".
fn task() -> (tempfile::TempDir, Task) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("task.toml"),
        "schema = \"schema.json\"\nprompt = \"prompt.txt\"\ndocument-label = \"Lease\"\n\n[splits]\ntrain = \"train.jsonl\"\n\n\
         [fields.tenants]\nmatch = \"list\"\n\n[fields.signed]\nmatch = \"date\"\n",
    )
    .unwrap();
    let schema = json!({
        "type": "object", "additionalProperties": false, "required": ["signed", "tenants", "kind"],
        "properties": {
            "signed": {"type": ["string", "null"], "description": "The date the lease was signed"},
            "tenants": {"type": "array", "items": {"type": "string"}},
            "kind": {"type": ["string", "null"], "enum": ["residential", "commercial", null]}
        }
    });
    std::fs::write(p.join("schema.json"), schema.to_string()).unwrap();
    std::fs::write(p.join("prompt.txt"), "Extract the lease facts as JSON.\n").unwrap();
    let line = json!({"id": "x", "text": "t", "expected": {"signed": null, "tenants": [], "kind": null}});
    std::fs::write(p.join("train.jsonl"), format!("{line}\n")).unwrap();
    let task = Task::load(p).unwrap();
    (dir, task)
}

/// A train example and its scored record for `output`.
fn scored(task: &Task, id: &str, text: &str, expected: Value, output: &Value) -> (Example, ExampleRecord) {
    let mut s = score_example(&task.fields, &output.to_string(), false, &expected, None);
    feedback::attach(&mut s, text);
    let mut r = record(id, s.score);
    r.fields = s.fields;
    (Example { id: id.into(), text: text.into(), expected, line: 1 }, r)
}

fn field<'a>(tallies: &'a [FieldTally], name: &str) -> &'a FieldTally {
    tallies.iter().find(|t| t.field == name).unwrap()
}

#[test]
fn missed_values_give_a_where_to_look_line_with_the_words_before_them() {
    let (_d, task) = task();
    let a = scored(
        &task,
        "a",
        "Preamble text. This lease is executed on 2020-01-05 by Ann Lee as tenant.",
        json!({"signed": "2020-01-05", "tenants": ["Ann Lee"], "kind": null}),
        &json!({"signed": null, "tenants": ["Ann Lee"], "kind": null}),
    );
    let b = scored(
        &task,
        "b",
        "The parties: this lease, executed on 2021-07-09, binds Bo Chan.",
        json!({"signed": "2021-07-09", "tenants": ["Bo Chan"], "kind": null}),
        &json!({"signed": null, "tenants": ["Bo Chan"], "kind": "residential"}),
    );
    let (train, records): (Vec<_>, Vec<_>) = [a, b].into_iter().unzip();
    let tallies = tally(&task.fields, &train, &records);
    let signed = field(&tallies, "signed");
    assert_eq!((signed.missed, signed.found), (2, 2));
    assert_eq!(signed.cues.get("executed"), Some(&2), "{:?}", signed.cues);
    assert_eq!(signed.cues.get("lease"), Some(&2));
    assert_eq!(field(&tallies, "kind").hallucinated, 1);

    let edits = edits(&task, &task.prompt, &tallies);
    // The biggest failure count first: 2 misses of `signed`, then the hallucinated `kind`. Two
    // documents are too few to tell common words ("this") from cues: none is dropped.
    assert_eq!(
        edits[0],
        (
            2,
            Edit::Add("- signed: the lease usually states it; look near words such as \"executed\", \"lease\", \"this\".".into())
        )
    );
    assert_eq!(edits[1], (1, Edit::Add("- kind: use null unless the lease states it in so many words; never guess.".into())));
    assert_eq!(edits.len(), 2);
}

#[test]
fn wrong_values_get_format_hints_from_the_schema_and_copy_exactly_when_verbatim() {
    let (_d, task) = task();
    let a = scored(
        &task,
        "a",
        "Signed 3 March 2020. Tenants: Ann Lee and Bo Chan. A commercial lease.",
        json!({"signed": "2020-03-03", "tenants": ["Ann Lee", "Bo Chan"], "kind": "commercial"}),
        &json!({"signed": "2020-03-04", "tenants": ["Ann"], "kind": "Commercial lease"}),
    );
    let (train, records): (Vec<_>, Vec<_>) = [a].into_iter().unzip();
    let tallies = tally(&task.fields, &train, &records);
    let lines: Vec<String> = edits(&task, &task.prompt, &tallies)
        .into_iter()
        .map(|(_, e)| match e {
            Edit::Add(l) | Edit::Remove(l) => l,
        })
        .collect();
    let signed = lines.iter().find(|l| l.starts_with("- signed:")).unwrap();
    // The ISO date is not in the text verbatim: no "copy it exactly".
    assert_eq!(signed, "- signed: write the date as YYYY-MM-DD; it is the date the lease was signed.");
    let tenants = lines.iter().find(|l| l.starts_with("- tenants:")).unwrap();
    assert_eq!(tenants, "- tenants: list every one, each once; copy it exactly as the lease writes it.");
    let kind = lines.iter().find(|l| l.starts_with("- kind:")).unwrap();
    assert!(kind.contains("answer with one of \"residential\", \"commercial\""), "{kind}");
}

#[test]
fn apply_adds_to_one_block_at_the_end_and_removes_lines_until_the_block_is_gone() {
    let base = "Extract the facts.\n";
    let one = apply(base, &Edit::Add("- a: first.".into())).unwrap();
    assert_eq!(one, "Extract the facts.\n\nField guidance:\n- a: first.\n");
    let two = apply(&one, &Edit::Add("- b: second.".into())).unwrap();
    assert_eq!(two, "Extract the facts.\n\nField guidance:\n- a: first.\n- b: second.\n");
    assert_eq!(guidance(&two), vec!["- a: first.", "- b: second."]);
    assert_eq!(apply(&two, &Edit::Add("- a: first.".into())), None, "a line already there changes nothing");
    assert_eq!(apply(&two, &Edit::Remove("- c: absent.".into())), None);
    let back = apply(&two, &Edit::Remove("- a: first.".into())).unwrap();
    assert_eq!(back, "Extract the facts.\n\nField guidance:\n- b: second.\n");
    assert_eq!(apply(&back, &Edit::Remove("- b: second.".into())).unwrap(), base);
}

#[test]
fn lines_already_in_the_prompt_are_not_proposed_again_but_offered_for_removal() {
    let (_d, task) = task();
    let a = scored(
        &task,
        "a",
        "No kind is stated here at all.",
        json!({"signed": null, "tenants": [], "kind": null}),
        &json!({"signed": null, "tenants": [], "kind": "residential"}),
    );
    let (train, records): (Vec<_>, Vec<_>) = [a].into_iter().unzip();
    let tallies = tally(&task.fields, &train, &records);
    let line = "- kind: use null unless the lease states it in so many words; never guess.";
    let base = apply(&task.prompt, &Edit::Add(line.into())).unwrap();
    assert_eq!(edits(&task, &base, &tallies), vec![(0, Edit::Remove(line.into()))]);

    let current = Prompt::new(base, Framing::new("Lease").unwrap());
    let proposed = propose(&task, &current, &train, &records, 4);
    assert_eq!(proposed.len(), 1);
    assert_eq!(proposed[0].base, task.prompt);
}

#[test]
fn nothing_to_fix_proposes_nothing_and_engine_errors_are_not_counted() {
    let (_d, task) = task();
    let a = scored(
        &task,
        "a",
        "Signed 2020-01-01 by Ann Lee.",
        json!({"signed": "2020-01-01", "tenants": ["Ann Lee"], "kind": null}),
        &json!({"signed": "2020-01-01", "tenants": ["Ann Lee"], "kind": null}),
    );
    let (ex, mut failed) = scored(
        &task,
        "b",
        "Signed 2020-01-02 by Bo Chan.",
        json!({"signed": "2020-01-02", "tenants": ["Bo Chan"], "kind": null}),
        &json!({"signed": null, "tenants": [], "kind": null}),
    );
    failed.error = Some("engine".into());
    let train = vec![a.0, ex];
    let records = vec![a.1, failed];
    let current = Prompt::new(task.prompt.clone(), Framing::new("Lease").unwrap());
    assert!(propose(&task, &current, &train, &records, 4).is_empty());
}

#[test]
fn cue_words_from_an_offset_past_the_end_or_inside_a_char_are_none_not_a_panic() {
    assert_eq!(words_before("governed by Delaware", 12), vec!["governed"]);
    assert_eq!(words_before("short", 900), vec!["short"], "clamped to the end");
    assert!(words_before("é governed", 1).is_empty(), "byte 1 is inside 'é'");
}

/// Words in most train documents are not cues, whatever the language; words before the value
/// in only some documents are. Ties among edits of equal weight follow the seed, and a prompt
/// proposed before is skipped for the next edit.
#[test]
fn common_words_are_learned_from_the_documents_and_seeds_order_equal_edits() {
    let (_d, task) = task();
    let docs = [
        "Ce bail est signé le 2020-01-05 par Ann Lee.",
        "Ce bail, signé le 2021-07-09, lie Bo Chan.",
        "Ce bail est conclu; signé le 2019-03-01 avec Cy Doe.",
        "Ce bail lie Di Eng; daté du 2018-02-02.",
        "Ce bail lie Ed Fox; daté du 2017-04-04.",
    ];
    let common = common_words(
        &docs
            .iter()
            .enumerate()
            .map(|(i, t)| Example { id: format!("d{i}"), text: (*t).into(), expected: json!({}), line: 1 })
            .collect::<Vec<_>>(),
    );
    // "bail" is in all 5 documents; "signé" in 3 of 5 (60%): both common; "daté" in 2: not.
    assert!(common.contains("bail") && common.contains("signé") && !common.contains("daté"), "{common:?}");
    let scored_docs: Vec<(Example, ExampleRecord)> = docs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let date = text.split([' ', ',', '.']).find(|w| w.len() == 10 && w.starts_with('2')).unwrap();
            scored(
                &task,
                &format!("d{i}"),
                text,
                json!({"signed": date, "tenants": [], "kind": null}),
                &json!({"signed": null, "tenants": [], "kind": "commercial"}),
            )
        })
        .collect();
    let (train, records): (Vec<_>, Vec<_>) = scored_docs.into_iter().unzip();
    let tallies = tally(&task.fields, &train, &records);
    let signed = field(&tallies, "signed");
    assert!(!signed.cues.contains_key("bail") && !signed.cues.contains_key("signé"), "{:?}", signed.cues);
    assert_eq!(signed.cues.get("daté"), Some(&2), "{:?}", signed.cues);

    // Two edits address 5 failures each (5 misses of `signed`, 5 hallucinated `kind`): the
    // seed decides which comes first, every seed offers both, and a seen prompt is skipped.
    let current = Prompt::new(task.prompt.clone(), Framing::default());
    let firsts: BTreeSet<String> = (0..16)
        .map(|seed| propose_with(&task, &current, &train, &records, 1, Some((seed, 0)), &HashSet::new())[0].base.clone())
        .collect();
    assert_eq!(firsts.len(), 2, "{firsts:?}");
    let both = propose_with(&task, &current, &train, &records, 2, Some((0, 0)), &HashSet::new());
    let seen: HashSet<String> = [both[0].sha256()].into();
    let next = propose_with(&task, &current, &train, &records, 1, Some((0, 0)), &seen);
    assert_eq!(next[0], both[1]);
}

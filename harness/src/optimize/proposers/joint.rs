//! The `joint` proposer: instructions and demos searched together, the next combinations chosen
//! by a surrogate rather than at random (the idea of `MIPROv2`; here a UCB bandit over the
//! components, fed by every candidate's train score, partial racing rungs included).
//!
//! - The **instruction pool** is every distinct instruction (base) of the prompts scored on all
//!   of train so far: the task's prompt, and whatever `edits`, `reflect`, `rewrite` or `opro`
//!   produced and the search kept in its pool.
//! - The **demo pool** is every train example: those some scored prompt gets fully right (the
//!   model can do them) and the gold-labelled rest, each shown as an evidence-centred excerpt.
//! - Each component's value is the mean train score of the candidates that contained it, with
//!   an upper-confidence bonus `sqrt(2 ln N / n)` (N candidates scored, n of them with the
//!   component; an untried component scores highest). A candidate is the instruction with the
//!   best bound plus the `k` demos with the best bounds, skipping combinations already proposed.
//!
//! Ties (every untried demo has an infinite bound) go to a demo order drawn from the run's seed:
//! a seeded shuffle of train, and for a task with enum fields (classification) the labels taken
//! in turn, so that the first demos tried cover as many labels as there are demos. Different
//! seeds try different demos first; the same seed proposes the same combinations, and the
//! `scored` hook feeds it, so a resumed run (whose candidates are scored again from the log)
//! proposes them again. Instructions keep pool order on ties (the task's own prompt first).

use std::collections::{BTreeMap, BTreeSet};

use super::{Context, Proposed, Proposer};
use crate::optimize::events::Observer;
use crate::optimize::log::RunLog;
use crate::optimize::prompt::{Demo, Prompt};
use crate::optimize::OptimizeError;
use crate::task::{Example, MatchRule, Task};
use engines::SplitMix64;

/// One component's record: the sum and count of the train means of candidates holding it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Stat {
    sum: f64,
    n: usize,
}

/// The `joint` proposer: `candidates` combinations of an instruction and `k` demos a round.
#[derive(Debug, Clone, Default)]
pub struct JointProposer {
    pub candidates: usize,
    pub k: usize,
    /// The run's seed: the order of untried demos.
    pub seed: u64,
    /// By instruction text (trimmed).
    instructions: BTreeMap<String, Stat>,
    /// By demo id.
    demos: BTreeMap<String, Stat>,
    /// Candidates scored so far.
    scored: usize,
    /// Combinations proposed so far: (instruction, sorted demo ids).
    proposed: BTreeSet<(String, Vec<String>)>,
}

impl JointProposer {
    pub fn new(candidates: usize, k: usize) -> Self {
        JointProposer { candidates, k, ..JointProposer::default() }
    }

    /// The same, with the run's seed.
    pub fn seeded(candidates: usize, k: usize, seed: u64) -> Self {
        JointProposer { seed, ..JointProposer::new(candidates, k) }
    }

    /// The upper confidence bound of a component (untried: infinite).
    fn bound(&self, s: Stat) -> f64 {
        if s.n == 0 {
            return f64::INFINITY;
        }
        s.sum / s.n as f64 + (2.0 * (self.scored.max(1) as f64).ln() / s.n as f64).sqrt()
    }

    /// Components of `pool` (names in pool order) ranked by their bound, best first.
    fn ranked<'a>(&self, names: &[&'a str], stats: &BTreeMap<String, Stat>) -> Vec<&'a str> {
        let mut ranked: Vec<(usize, &'a str, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i, *n, self.bound(stats.get(n.trim()).copied().unwrap_or_default())))
            .collect();
        ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        ranked.into_iter().map(|(_, n, _)| n).collect()
    }

    /// Up to `candidates` new combinations from the instructions and demo examples of `ctx`.
    pub fn combinations(&mut self, ctx: &Context<'_>) -> Vec<Prompt> {
        let mut instructions: Vec<&str> = Vec::new();
        for m in ctx.pool {
            if !instructions.iter().any(|i| i.trim() == m.prompt.base.trim()) {
                instructions.push(&m.prompt.base);
            }
        }
        if instructions.is_empty() {
            instructions.push(&ctx.current.base);
        }
        let ids: Vec<&str> = demo_order(ctx.task, ctx.train, self.seed).into_iter().map(|i| ctx.train[i].id.as_str()).collect();
        let by_instruction = self.ranked(&instructions, &self.instructions);
        let by_demo = self.ranked(&ids, &self.demos);
        let mut out = Vec::new();
        // Walk instructions best first; for each, the best demos, then the next best set that
        // was not proposed yet (drop the weakest chosen demo for the next one in line).
        'outer: for inst in by_instruction {
            let k = self.k.min(by_demo.len());
            for shift in 0..=by_demo.len().saturating_sub(k) {
                if out.len() >= self.candidates {
                    break 'outer;
                }
                let mut chosen: Vec<&str> = by_demo[..k.saturating_sub(1)].to_vec();
                if k > 0 {
                    chosen.push(by_demo[k - 1 + shift]);
                }
                let mut key_ids: Vec<String> = chosen.iter().map(|s| (*s).to_owned()).collect();
                key_ids.sort();
                let key = (inst.trim().to_owned(), key_ids);
                if self.proposed.contains(&key) {
                    continue;
                }
                self.proposed.insert(key);
                let mut prompt = Prompt::new(inst, ctx.current.framing.clone());
                // Demos in split order, so a candidate's text does not depend on the ranking.
                prompt.demos = ctx.train.iter().filter(|e| chosen.contains(&e.id.as_str())).map(Demo::around_evidence).collect();
                out.push(prompt);
                break;
            }
        }
        out
    }
}

/// Indices of `train` in the order untried demos are tried: a shuffle seeded by `seed`, then, when
/// the task has enum fields, one example of each label (the enum values, together) in turn.
pub fn demo_order(task: &Task, train: &[Example], seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::derive(seed, "joint-demo-order", 0);
    let shuffled = rng.sample_indices(train.len(), train.len());
    let enums: Vec<&str> = task.fields.iter().filter(|f| f.rule == MatchRule::Enum).map(|f| f.name.as_str()).collect();
    if enums.is_empty() {
        return shuffled;
    }
    let label = |i: usize| {
        enums.iter().map(|f| train[i].expected.get(*f).map(ToString::to_string).unwrap_or_default()).collect::<Vec<_>>()
    };
    // Groups in order of their first member; then the first of each group, the second, ...
    let mut groups: Vec<(Vec<String>, Vec<usize>)> = Vec::new();
    for i in shuffled {
        let l = label(i);
        match groups.iter_mut().find(|(g, _)| *g == l) {
            Some((_, members)) => members.push(i),
            None => groups.push((l, vec![i])),
        }
    }
    let rounds = groups.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
    (0..rounds).flat_map(|r| groups.iter().filter_map(move |(_, m)| m.get(r).copied())).collect()
}

impl Proposer for JointProposer {
    fn propose(&mut self, ctx: &Context<'_>, _log: &mut RunLog, _obs: &mut dyn Observer) -> Result<Proposed, OptimizeError> {
        let prompts = self.combinations(ctx);
        Ok(Proposed::offline(prompts))
    }

    fn exhausted(&self, proposed: &Proposed) -> Option<String> {
        proposed.candidates.is_empty().then(|| "every instruction x demo combination in reach was proposed".to_owned())
    }

    fn scored(&mut self, prompt: &Prompt, train_mean: f64) {
        self.scored += 1;
        let s = self.instructions.entry(prompt.base.trim().to_owned()).or_default();
        s.sum += train_mean;
        s.n += 1;
        for d in &prompt.demos {
            let s = self.demos.entry(d.id.clone()).or_default();
            s.sum += train_mean;
            s.n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::frontier::Member;
    use crate::optimize::proposers::demos::tests::{example, record};
    use crate::optimize::proposers::Clock;
    use crate::task::{Example, Framing, Task};

    fn task() -> (tempfile::TempDir, Task) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("task.toml"), "schema = \"s.json\"\nprompt = \"p.txt\"\n[splits]\ntrain = \"t.jsonl\"\n").unwrap();
        std::fs::write(p.join("s.json"), r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}"#).unwrap();
        std::fs::write(p.join("p.txt"), "Extract.\n").unwrap();
        std::fs::write(p.join("t.jsonl"), "{\"id\":\"t1\",\"text\":\"x\",\"expected\":{\"id\":\"t1\"}}\n").unwrap();
        let task = Task::load(p).unwrap();
        (dir, task)
    }

    fn ctx<'a>(task: &'a Task, current: &'a Prompt, train: &'a [Example], pool: &'a [Member]) -> Context<'a> {
        Context {
            iteration: 0,
            kind: crate::config::ProposerKind::Joint,
            task,
            current,
            train,
            current_train: &[],
            pool,
            seen: Box::leak(Box::default()),
            clock: Clock::start(None),
        }
    }

    #[test]
    fn untried_components_come_first_then_the_best_scored_ones() {
        let (_d, task) = task();
        let train: Vec<Example> = ["a", "b", "c"].map(example).to_vec();
        let base = Prompt::new("Extract.\n", Framing::default());
        let mut other = base.clone();
        other.base = "Extract carefully.\n".into();
        let pool = vec![
            Member { prompt: base.clone(), train: vec![record("a", 0.0)] },
            Member { prompt: other.clone(), train: vec![record("a", 0.0)] },
        ];
        let mut j = JointProposer::seeded(2, 1, 7);
        let first = j.combinations(&ctx(&task, &base, &train, &pool));
        // Nothing scored: the seed's first demo with the first instruction, then the second
        // instruction with that demo as well (a new combination).
        let d = train[demo_order(&task, &train, 7)[0]].id.clone();
        assert_eq!(first.len(), 2);
        assert_eq!((first[0].base.as_str(), first[0].demo_ids()), ("Extract.\n", vec![d.clone()]));
        assert_eq!((first[1].base.as_str(), first[1].demo_ids()), ("Extract carefully.\n", vec![d]));
        // Scores: the second instruction and demo c do well.
        let mut with = |b: &Prompt, ids: &[&str], mean: f64| {
            let mut p = b.clone();
            p.demos = ids.iter().map(|id| Demo::from_example(&example(id))).collect();
            j.scored(&p, mean);
        };
        with(&base, &["a"], 0.1);
        with(&other, &["a"], 0.2);
        with(&other, &["b"], 0.3);
        with(&other, &["c"], 0.9);
        with(&base, &["b"], 0.0);
        let next = j.combinations(&ctx(&task, &base, &train, &pool));
        assert_eq!((next[0].base.as_str(), next[0].demo_ids()), ("Extract carefully.\n", vec!["c".to_owned()]));
        // Never the same combination twice.
        let again = j.combinations(&ctx(&task, &base, &train, &pool));
        assert!(again.iter().all(|p| !(p.base == next[0].base && p.demo_ids() == next[0].demo_ids())));
    }

    #[test]
    fn seeds_change_the_first_demos_and_classification_demos_cover_the_labels_first() {
        let (_d, task) = task();
        let train: Vec<Example> = (0..12).map(|i| example(&format!("e{i:02}"))).collect();
        let firsts: BTreeSet<usize> = (0..20).map(|seed| demo_order(&task, &train, seed)[0]).collect();
        assert!(firsts.len() >= 5, "20 seeds, first demos {firsts:?}");
        let order = demo_order(&task, &train, 3);
        assert_eq!(order, demo_order(&task, &train, 3), "the same seed, the same order");
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..12).collect::<Vec<_>>(), "a permutation");

        // An enum field with 3 labels over 9 examples (6, 2, 1): the first 3 demos are 3 labels.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("task.toml"), "schema = \"s.json\"\nprompt = \"p.txt\"\n[splits]\ntrain = \"t.jsonl\"\n").unwrap();
        let schema = r#"{"type":"object","properties":{"label":{"type":"string","enum":["x","y","z"]}},"required":["label"]}"#;
        std::fs::write(p.join("s.json"), schema).unwrap();
        std::fs::write(p.join("p.txt"), "Classify.\n").unwrap();
        let labels = ["x", "x", "x", "x", "x", "x", "y", "y", "z"];
        let lines: String = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                serde_json::json!({"id": format!("c{i}"), "text": format!("t{i}"), "expected": {"label": l}}).to_string() + "\n"
            })
            .collect();
        std::fs::write(p.join("t.jsonl"), lines).unwrap();
        let task = Task::load(p).unwrap();
        let train = &task.splits["train"].examples;
        for seed in 0..10 {
            let order = demo_order(&task, train, seed);
            let first: BTreeSet<&str> = order[..3].iter().map(|&i| train[i].expected["label"].as_str().unwrap()).collect();
            assert_eq!(first.len(), 3, "seed {seed}: {order:?}");
        }
    }

    #[test]
    fn demos_are_evidence_excerpts_in_split_order_and_the_pool_runs_out() {
        let (_d, task) = task();
        let train: Vec<Example> = ["a", "b"].map(example).to_vec();
        let base = Prompt::new("Extract.\n", Framing::default());
        let pool = vec![Member { prompt: base.clone(), train: vec![record("a", 1.0), record("b", 0.0)] }];
        let mut j = JointProposer::new(5, 2);
        let first = j.combinations(&ctx(&task, &base, &train, &pool));
        assert_eq!(first.len(), 1, "one instruction, two demos: one combination");
        assert_eq!(first[0].demo_ids(), vec!["a", "b"]);
        assert_eq!(first[0].demos[0], Demo::around_evidence(&train[0]));
        assert!(j.combinations(&ctx(&task, &base, &train, &pool)).is_empty());
    }
}

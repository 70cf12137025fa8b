//! The `merge` proposer: two Pareto-frontier members (the two that lead the most train
//! examples) combined, each way round: one's instruction with the other's field-guidance lines
//! (see [`super::edits`]) and demos added, so the guidance and demos each one wins with end up
//! in one prompt. No LLM; nothing when the frontier holds fewer than two members or the
//! combination equals a parent.

use super::edits::{apply, guidance, Edit};
use super::{Candidate, Context, Proposed, Proposer};
use crate::optimize::events::Observer;
use crate::optimize::frontier::{merge_pair, Member};
use crate::optimize::log::RunLog;
use crate::optimize::prompt::Prompt;
use crate::optimize::OptimizeError;

/// The `merge` proposer.
#[derive(Debug, Clone, Default)]
pub struct MergeProposer;

impl Proposer for MergeProposer {
    fn propose(&mut self, ctx: &Context<'_>, _log: &mut RunLog, _obs: &mut dyn Observer) -> Result<Proposed, OptimizeError> {
        Ok(Proposed {
            candidates: propose(ctx.pool)
                .into_iter()
                .map(|(prompt, parent)| Candidate { prompt, request_sha256: None, parent_sha256: Some(parent) })
                .collect(),
            ..Proposed::default()
        })
    }

    fn exhausted(&self, proposed: &Proposed) -> Option<String> {
        proposed.candidates.is_empty().then(|| "no two frontier prompts combine into a new one".to_owned())
    }
}

/// `a` with the guidance lines and demos of `b` that it lacks.
pub fn combine(a: &Prompt, b: &Prompt) -> Prompt {
    let mut base = a.base.clone();
    for line in guidance(&b.base) {
        if let Some(next) = apply(&base, &Edit::Add(line.to_owned())) {
            base = next;
        }
    }
    let mut demos = a.demos.clone();
    demos.extend(b.demos.iter().filter(|d| a.demos.iter().all(|x| x.id != d.id)).cloned());
    Prompt { base, demos, framing: a.framing.clone() }
}

/// The combinations of the two leading frontier members, each with the hash of the member
/// whose instruction it keeps; those equal to a member of the pool are left out.
pub fn propose(pool: &[Member]) -> Vec<(Prompt, String)> {
    let Some((a, b)) = merge_pair(pool) else { return Vec::new() };
    let mut out: Vec<(Prompt, String)> = Vec::new();
    for (x, y) in [(a, b), (b, a)] {
        let merged = combine(&pool[x].prompt, &pool[y].prompt);
        let text = merged.text();
        if pool.iter().any(|m| m.prompt.text() == text) || out.iter().any(|(p, _)| p.text() == text) {
            continue;
        }
        out.push((merged, pool[x].prompt.sha256()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::prompt::Demo;
    use crate::optimize::proposers::demos::tests::{example, record};
    use crate::task::Framing;

    fn member(base: &str, demos: &[&str], scores: &[f64]) -> Member {
        let mut prompt = Prompt::new(base, Framing::default());
        prompt.demos = demos.iter().map(|id| Demo::from_example(&example(id))).collect();
        let train = scores.iter().enumerate().map(|(i, s)| record(&format!("t{i}"), *s)).collect();
        Member { prompt, train }
    }

    #[test]
    fn the_two_leaders_are_combined_each_way_with_guidance_and_demos_once() {
        let base = "Extract.\n";
        let with_a = apply(base, &Edit::Add("- a: look near \"dated\".".into())).unwrap();
        let with_b = apply(base, &Edit::Add("- b: use null unless stated.".into())).unwrap();
        let pool = vec![
            member(base, &[], &[0.0, 0.0, 0.5]),
            member(&with_a, &["t7"], &[1.0, 0.0, 0.5]),
            member(&with_b, &["t7", "t8"], &[0.0, 1.0, 0.5]),
        ];
        let merged = propose(&pool);
        assert_eq!(merged.len(), 2);
        let (ab, parent) = &merged[0];
        assert_eq!(parent, &pool[1].prompt.sha256());
        assert_eq!(guidance(&ab.base), vec!["- a: look near \"dated\".", "- b: use null unless stated."]);
        assert_eq!(ab.demo_ids(), vec!["t7", "t8"]);
        let (ba, _) = &merged[1];
        assert_eq!(guidance(&ba.base), vec!["- b: use null unless stated.", "- a: look near \"dated\"."]);
        assert_eq!(ba.demo_ids(), vec!["t7", "t8"]);
    }

    #[test]
    fn a_frontier_of_one_or_a_merge_equal_to_a_member_proposes_nothing() {
        let pool = vec![member("Extract.\n", &[], &[0.0, 1.0]), member("Extract.\n", &["t1"], &[0.0, 0.5])];
        assert!(propose(&pool).is_empty(), "the second member is dominated: a frontier of one");
        let same = vec![member("Extract.\n", &["t1"], &[1.0, 0.0]), member("Extract.\n", &[], &[0.0, 1.0])];
        assert_eq!(merge_pair(&same), Some((0, 1)));
        // Each way the merge is the first member's prompt (same base, its demo): nothing new.
        assert!(propose(&same).is_empty());
    }
}

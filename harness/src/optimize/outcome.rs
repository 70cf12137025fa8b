//! Typed outcomes: why a candidate was rejected before or during its train evaluation
//! ([`Rejection`]) and what an iteration decided ([`Verdict`]). The loop branches on these and
//! the report reads them; the free-text reasons of logs of format 2 are read back into them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a candidate was not a finalist of its iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rejection {
    /// It copies train documents verbatim (the leakage guard; never evaluated). The overlap
    /// itself is in the candidate's `overlap`.
    Leakage { fraction: f64, ngram: usize, threshold: f64 },
    /// The same prompt as the current one or one proposed earlier in the run (never evaluated
    /// again).
    Duplicate,
    /// Its instruction takes more prompt tokens than `--max-prompt-tokens` (never evaluated).
    PromptTooLong { tokens: usize, max: usize },
    /// Dropped by racing after `evaluated` of the `train` examples: its `train_mean` and
    /// `scores` cover those. `gain` is its mean gain over the current prompt on them; `went_on`
    /// of the rung's `rung` candidates went on.
    Raced { evaluated: usize, train: usize, gain: f64, went_on: usize, rung: usize },
    /// A reason logged as free text that matches none of the above (logs of format 2).
    Other { reason: String },
}

impl Rejection {
    /// Whether the candidate was scored on part of train before it was dropped.
    pub fn partly_scored(&self) -> bool {
        matches!(self, Rejection::Raced { .. })
    }

    /// Reads a format-2 free-text reason back.
    pub fn from_text(text: &str) -> Self {
        raced_from_text(text).unwrap_or_else(|| {
            if text.contains("duplicate of the current prompt") || text.contains("duplicate of a prompt proposed before") {
                Rejection::Duplicate
            } else {
                Rejection::Other { reason: text.to_owned() }
            }
        })
    }
}

/// "racing: dropped after {n} of {m} train examples (mean gain {g} over the current prompt on
/// them; {k} of {r} went on)".
fn raced_from_text(text: &str) -> Option<Rejection> {
    let rest = text.strip_prefix("racing: dropped after ")?;
    let (evaluated, rest) = rest.split_once(" of ")?;
    let (train, rest) = rest.split_once(" train examples (mean gain ")?;
    let (gain, rest) = rest.split_once(' ')?;
    let (_, rest) = rest.split_once("; ")?;
    let (went_on, rest) = rest.split_once(" of ")?;
    let (rung, _) = rest.split_once(' ')?;
    Some(Rejection::Raced {
        evaluated: evaluated.parse().ok()?,
        train: train.parse().ok()?,
        gain: gain.parse().ok()?,
        went_on: went_on.parse().ok()?,
        rung: rung.parse().ok()?,
    })
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Leakage { fraction, ngram, threshold } => write!(
                f,
                "rejected: leakage: {:.0}% of its {ngram}-word n-grams copy train documents verbatim (threshold {:.0}%)",
                fraction * 100.0,
                threshold * 100.0
            ),
            Rejection::Duplicate => f.write_str("rejected: duplicate of a prompt proposed before"),
            Rejection::PromptTooLong { tokens, max } => {
                write!(f, "rejected: the instruction takes {tokens} prompt tokens, more than --max-prompt-tokens {max}")
            }
            Rejection::Raced { evaluated, train, gain, went_on, rung } => write!(
                f,
                "racing: dropped after {evaluated} of {train} train examples (mean gain {gain:+.4} over the current prompt on them; {went_on} of {rung} went on)"
            ),
            Rejection::Other { reason } => f.write_str(reason),
        }
    }
}

/// What an iteration decided. The gates' numbers are in the decision's `train` and `dev`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// Beat the current prompt on train and held on dev: the new current prompt.
    Accepted,
    /// The iteration's best on train showed no gain over the current prompt.
    NoTrainGain,
    /// Won on train, lost on dev (held out).
    Overfit,
    /// No gain on train the gate can confirm, but no lower mean on train or dev, with fewer
    /// prompt tokens (`tokens`, was `was`): the new current prompt, as good and cheaper.
    Shorter { tokens: usize, was: usize },
    /// No candidate could be evaluated (every optimizer call failed, or every candidate was
    /// rejected before its eval).
    NoCandidate { failed_calls: usize },
    /// The loop ends here: a cap, the time budget, or nothing left to propose.
    Stopped { by: String },
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        matches!(self, Verdict::Accepted | Verdict::Shorter { .. })
    }

    /// Reads a format-2 decision's free-text reason back.
    pub fn from_text(accepted: bool, reason: &str) -> Self {
        if accepted {
            return Verdict::Accepted;
        }
        if let Some(by) = reason.strip_prefix("stopped: ") {
            return Verdict::Stopped { by: by.to_owned() };
        }
        if reason.starts_with("rejected: overfit") {
            return Verdict::Overfit;
        }
        if reason.starts_with("rejected: no gain") {
            return Verdict::NoTrainGain;
        }
        let failed_calls = reason
            .split_once("no usable candidate (")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Verdict::NoCandidate { failed_calls }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racing_text_reads_back_into_its_numbers() {
        let r = Rejection::Raced { evaluated: 2, train: 8, gain: -0.125, went_on: 2, rung: 4 };
        assert_eq!(Rejection::from_text(&r.to_string()), r);
        assert!(r.partly_scored());
        assert_eq!(Rejection::from_text("rejected: duplicate of the current prompt"), Rejection::Duplicate);
        assert_eq!(Rejection::from_text(&Rejection::Duplicate.to_string()), Rejection::Duplicate);
        let leak = "rejected: leakage: 40% of its 8-grams copy train documents";
        assert_eq!(Rejection::from_text(leak), Rejection::Other { reason: leak.into() });
        assert!(!Rejection::Duplicate.partly_scored());
    }

    #[test]
    fn decision_text_reads_back() {
        assert_eq!(Verdict::from_text(true, "accepted"), Verdict::Accepted);
        assert_eq!(Verdict::from_text(false, "rejected: overfit: wins on train but loses on dev"), Verdict::Overfit);
        assert_eq!(Verdict::from_text(false, "rejected: no gain on train (mean delta +0.0)"), Verdict::NoTrainGain);
        assert_eq!(
            Verdict::from_text(false, "stopped: no failing train example left to draw demos from"),
            Verdict::Stopped { by: "no failing train example left to draw demos from".into() }
        );
        assert_eq!(
            Verdict::from_text(false, "rejected: no usable candidate (3 optimizer calls failed)"),
            Verdict::NoCandidate { failed_calls: 3 }
        );
    }
}

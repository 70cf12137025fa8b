//! The named choices of the run's flags, each with one name table: clap's [`ValueEnum`] (derived
//! in kebab-case, as serde writes them) gives the command line, `Display` and `FromStr` the
//! same names. `--proposer` takes a [`Schedule`] of [`ProposerKind`]s.

use std::fmt;
use std::str::FromStr;

use clap::builder::PossibleValue;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::llm::OptimizerSpec;

/// `Display` and `FromStr` by the [`ValueEnum`] name table (case-insensitive, as the flags).
macro_rules! named {
    ($($t:ty: $what:literal),* $(,)?) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.to_possible_value() {
                    Some(v) => f.write_str(v.get_name()),
                    None => Ok(()),
                }
            }
        }

        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$t as ValueEnum>::from_str(s, true).map_err(|_| {
                    let names: Vec<String> = <$t>::value_variants().iter().map(ToString::to_string).collect();
                    format!("unknown {} `{s}` (expected {})", $what, names.join(" or "))
                })
            }
        }
    )*};
}

named!(Accept: "acceptance rule", Racing: "racing", SearchMode: "search", DemoExcerpt: "demo excerpt", Switch: "switch");

/// How a candidate must beat the current prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Accept {
    /// Paired bootstrap over per-example deltas: train lower bound > 0; dev upper bound >= 0.
    #[default]
    Bootstrap,
    /// Higher train mean; dev mean not lower.
    Mean,
}

/// How an iteration's candidates share the train evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Racing {
    /// Every candidate on all of train.
    Off,
    /// Successive halving from a quarter of train: only the better half goes on at each rung.
    #[default]
    Halving,
}

/// Where an iteration's proposals start from (`--search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SearchMode {
    /// Always the incumbent (the best prompt kept so far).
    #[default]
    Greedy,
    /// A member of the Pareto frontier over train examples, drawn by the examples it leads
    /// (see `optimize::frontier`); the gate still compares with the incumbent.
    Pareto,
}

/// What part of a train document a demo shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DemoExcerpt {
    /// The first characters of the document.
    #[default]
    Head,
    /// The head and a window around each gold value where the document states it.
    Evidence,
}

/// An on/off flag (`--prefix-cache`, `--fast-forward`, `--speculative`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

impl From<bool> for Switch {
    fn from(on: bool) -> Self {
        if on {
            Switch::On
        } else {
            Switch::Off
        }
    }
}

/// A way of making candidates. Adding one: a variant here (its name in [`Self::as_str`]) and
/// its proposer in `optimize::proposers::Proposers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProposerKind {
    /// The optimizer rewrites the prompt from the worst failures.
    Rewrite,
    /// OPRO: the optimizer sees past prompts with their scores.
    Opro,
    /// Worked examples from failing train examples (no LLM).
    Demos,
    /// Field-guidance edits driven by the scorer's failure classes and evidence (no LLM).
    Edits,
    /// Two Pareto-frontier members combined: one's instruction with the other's field
    /// guidance and demos added (no LLM).
    Merge,
    /// GEPA's reflective step: a random minibatch of the parent's failing train examples with
    /// the scorer's feedback goes to the optimizer, which diagnoses each failed field and
    /// writes a new instruction.
    Reflect,
    /// Instructions and demos searched together: a UCB bandit over the components, fed by
    /// every candidate's train score, picks the next combinations (no LLM).
    Joint,
}

impl ProposerKind {
    pub const ALL: [ProposerKind; 7] = [
        ProposerKind::Rewrite,
        ProposerKind::Opro,
        ProposerKind::Reflect,
        ProposerKind::Demos,
        ProposerKind::Edits,
        ProposerKind::Merge,
        ProposerKind::Joint,
    ];

    /// The name (the one table: flags, logs and messages use it).
    pub fn as_str(self) -> &'static str {
        match self {
            ProposerKind::Rewrite => "rewrite",
            ProposerKind::Opro => "opro",
            ProposerKind::Demos => "demos",
            ProposerKind::Edits => "edits",
            ProposerKind::Merge => "merge",
            ProposerKind::Reflect => "reflect",
            ProposerKind::Joint => "joint",
        }
    }

    pub fn needs_llm(self) -> bool {
        !matches!(self, ProposerKind::Demos | ProposerKind::Edits | ProposerKind::Merge | ProposerKind::Joint)
    }
}

impl ValueEnum for ProposerKind {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

/// `--proposer`: one proposer or a comma-separated schedule used in turn, e.g.
/// `rewrite,rewrite,demos`. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<ProposerKind>);

impl Schedule {
    /// The proposer of iteration `it`.
    pub fn at(&self, it: usize) -> ProposerKind {
        self.0[it % self.0.len()]
    }

    /// The schedule when `--proposer` is not given: `rewrite` with an optimizer model,
    /// `edits,joint` without.
    pub fn default_for(optimizer: &OptimizerSpec) -> Schedule {
        Schedule(if optimizer.is_none() { vec![ProposerKind::Edits, ProposerKind::Joint] } else { vec![ProposerKind::Rewrite] })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|k| k.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!("--proposer `{s}`: an empty entry in the schedule"));
            }
            let kind = <ProposerKind as ValueEnum>::from_str(part, true).map_err(|_| {
                let names: Vec<&str> = ProposerKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown proposer `{}` in `{s}`: expected {} or {} (or a comma-separated schedule of them)",
                    part.to_ascii_lowercase(),
                    names[..names.len() - 1].join(", "),
                    names[names.len() - 1]
                )
            })?;
            out.push(kind);
        }
        Ok(Schedule(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_once_and_print_back() {
        let s: Schedule = "rewrite, opro,demos".parse().unwrap();
        assert_eq!(s.0, vec![ProposerKind::Rewrite, ProposerKind::Opro, ProposerKind::Demos]);
        assert_eq!(s.to_string(), "rewrite,opro,demos");
        assert_eq!(s.at(4), ProposerKind::Opro);
        assert!("rewrite,,demos".parse::<Schedule>().unwrap_err().contains("empty entry"));
        assert!("magic".parse::<Schedule>().unwrap_err().contains("unknown proposer `magic`"));
    }

    #[test]
    fn choices_print_and_parse_by_one_table() {
        assert_eq!(Accept::Bootstrap.to_string(), "bootstrap");
        assert_eq!("MEAN".parse::<Accept>(), Ok(Accept::Mean));
        assert_eq!("halving".parse::<Racing>(), Ok(Racing::Halving));
        assert_eq!(DemoExcerpt::Evidence.to_string(), "evidence");
        assert_eq!(SearchMode::Pareto.to_string(), "pareto");
        assert_eq!(Switch::from(false).to_string(), "off");
        assert!("on".parse::<Switch>().unwrap().is_on());
        assert!("maybe".parse::<Switch>().unwrap_err().contains("expected on or off"));
        for k in ProposerKind::ALL {
            assert_eq!(k.as_str().parse::<Schedule>().unwrap().0, vec![k]);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()), "serde writes the same name");
        }
    }
}

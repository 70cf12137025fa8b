//! The configuration of an optimize run, parsed and validated once: how the search runs
//! ([`SearchOptions`]) and what runs the target model ([`EngineSetup`]), with the named choices
//! of its flags ([`choices`]). The run log's header stores a [`RunConfig`] whole, so `--resume`
//! continues with exactly the configuration the run started with.
//!
//! Both halves serialize flat under the header's `options` key, field for field as logs of
//! format 2 wrote them, so older logs still read: a field an older log lacks takes the value
//! that log ran with, from [`legacy`]. `Default` is what the command line runs without flags.

mod choices;
mod engine;
pub mod legacy;
mod search;

pub use choices::{Accept, DemoExcerpt, ProposerKind, Racing, Schedule, SearchMode, Switch};
pub use engine::EngineSetup;
pub use search::{evals_needed, SearchOptions};
use serde::{Deserialize, Serialize};

use crate::llm::prices::PriceTable;

/// A run's whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(flatten)]
    pub search: SearchOptions,
    #[serde(flatten)]
    pub engine: EngineSetup,
}

/// A configuration value the user got wrong (`--flag`: what is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl RunConfig {
    /// Everything the user can get wrong in the options, before any work is done.
    ///
    /// # Errors
    /// The first bad value, naming its flag.
    pub fn validate(&self, prices: &PriceTable) -> Result<(), ConfigError> {
        self.search.validate(prices)?;
        if self.engine.batch_size == 0 {
            return Err(ConfigError("--batch-size must be at least 1".into()));
        }
        Ok(())
    }

    /// The configuration the unit tests of the loop, the log and the report were written
    /// against: `Default` with proposer `demos`, head excerpts and no prefix cache (as
    /// `Default` was before it became the command line's).
    #[cfg(test)]
    pub(crate) fn for_tests() -> RunConfig {
        let mut c = RunConfig::default();
        c.search.proposer = Schedule(vec![ProposerKind::Demos]);
        c.search.demo_excerpt = DemoExcerpt::Head;
        c.engine.prefix_cache = None;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::OptimizerSpec;

    #[test]
    fn a_format_2_options_object_reads_as_a_run_config() {
        // As `optimize` wrote the header's options before the split (flat; no fast_forward).
        let old = serde_json::json!({
            "optimizer": "openai:gpt-x", "proposer": "rewrite,demos", "worst": 3, "temperature": 0.5,
            "optimizer_max_tokens": 512, "leak_ngram": 8, "leak_threshold": 0.1, "max_cost": null,
            "max_optimizer_tokens": null, "time_budget_s": null, "max_iterations": 2, "candidates": 3,
            "demos": 1, "seed": 7, "accept": "mean", "confidence": 0.9, "limit_train": 4,
            "limit_dev": null, "limit_test": null, "model": "smollm2-135m", "engine": "llama",
            "on_overflow": "error", "constraint": "llguidance", "batch_size": 2, "threads": 1,
            "ctx": null, "max_tokens": 64, "no_bounds": false, "chat_template": null
        });
        let c: RunConfig = serde_json::from_value(old).unwrap();
        assert_eq!(c.search.optimizer, OptimizerSpec::OpenAi { model: "gpt-x".into() });
        assert_eq!(c.search.proposer.to_string(), "rewrite,demos");
        assert_eq!((c.search.seed, c.search.accept, c.search.racing), (7, Accept::Mean, Racing::Off));
        assert_eq!((c.engine.batch_size, c.engine.max_tokens, c.engine.threads), (2, Some(64), Some(1)));
        assert!(!c.engine.fast_forward && !c.engine.speculative, "older logs neither forwarded nor drafted");
        let back: RunConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn validation_names_the_flag() {
        let prices = PriceTable::builtin();
        let mut c = RunConfig::default();
        assert_eq!(c.validate(&prices), Ok(()));
        c.search.proposer = "rewrite".parse().unwrap();
        assert!(c.validate(&prices).unwrap_err().0.contains("needs an optimizer model"));
        let mut c = RunConfig::default();
        c.engine.batch_size = 0;
        assert!(c.validate(&prices).unwrap_err().0.contains("--batch-size"));
        let mut c = RunConfig::default();
        c.search.confidence = 1.0;
        assert!(c.validate(&prices).unwrap_err().0.contains("--confidence"));
    }
}

//! Optimizer prices: a small editable table (USD per million tokens), built in from
//! `prices.toml` or read from `--prices FILE`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::OptimizerSpec;

/// The built-in table.
pub const BUILTIN: &str = include_str!("prices.toml");

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    pub const FREE: Price = Price { input: 0.0, output: 0.0 };

    /// USD for the given token counts.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input + output_tokens as f64 * self.output) / 1e6
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    api: String,
    model: String,
    input: f64,
    output: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    price: Vec<Entry>,
}

/// A bad price table.
#[derive(Debug, thiserror::Error)]
#[error("{path}{at}: {message}", at = line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PriceError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// Prices by optimizer API and model.
#[derive(Debug, Clone)]
pub struct PriceTable {
    entries: Vec<Entry>,
    /// Where it came from (`built-in` or a path), for messages.
    pub source: String,
}

impl PriceTable {
    pub fn builtin() -> Self {
        Self::parse(Path::new("built-in prices.toml"), BUILTIN).expect("the built-in price table parses")
    }

    pub fn load(path: &Path) -> Result<Self, PriceError> {
        let text =
            fs_err::read_to_string(path).map_err(|e| PriceError { path: path.into(), line: None, message: e.to_string() })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, PriceError> {
        let file: File = toml::from_str(text).map_err(|e| PriceError {
            path: path.into(),
            line: e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1)),
            message: e.message().to_owned(),
        })?;
        for (i, e) in file.price.iter().enumerate() {
            if !(e.input >= 0.0 && e.output >= 0.0 && e.input.is_finite() && e.output.is_finite()) {
                return Err(PriceError {
                    path: path.into(),
                    line: None,
                    message: format!("price entry {} ({}:{}): prices must be finite and >= 0", i + 1, e.api, e.model),
                });
            }
            if !matches!(e.api.as_str(), "openai" | "anthropic") {
                return Err(PriceError {
                    path: path.into(),
                    line: None,
                    message: format!("price entry {}: api `{}` is not openai or anthropic", i + 1, e.api),
                });
            }
        }
        Ok(PriceTable { entries: file.price, source: path.display().to_string() })
    }

    /// The price of `spec`'s model: free for `local:` and `none`; `None` when not listed.
    pub fn lookup(&self, spec: &OptimizerSpec) -> Option<Price> {
        let (api, model) = match spec {
            OptimizerSpec::None | OptimizerSpec::Local { .. } => return Some(Price::FREE),
            OptimizerSpec::OpenAi { model } => ("openai", model),
            OptimizerSpec::Anthropic { model } => ("anthropic", model),
        };
        self.entries
            .iter()
            .find(|e| {
                e.api == api
                    && match e.model.strip_suffix('*') {
                        Some(prefix) => model.starts_with(prefix),
                        None => *model == e.model,
                    }
            })
            .map(|e| Price { input: e.input, output: e.output })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_prices_known_models_and_prefixes() {
        let t = PriceTable::builtin();
        let mini = t.lookup(&"openai:gpt-4o-mini-2024-07-18".parse().unwrap()).unwrap();
        assert_eq!(mini, Price { input: 0.15, output: 0.60 });
        // The more specific prefix is listed first.
        assert!((t.lookup(&"openai:gpt-4o".parse().unwrap()).unwrap().input - 2.50).abs() < 1e-12);
        assert!(t.lookup(&"openai:my-vllm-model".parse().unwrap()).is_none());
        assert_eq!(t.lookup(&"local:gemma3-270m".parse().unwrap()), Some(Price::FREE));
        let cost = Price { input: 3.0, output: 15.0 }.cost(1_000_000, 100_000);
        assert!((cost - 4.5).abs() < 1e-9);
    }

    #[test]
    fn a_bad_table_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[[price]]\napi = \"openai\"\nmodel = \"m\"\ninput = \"cheap\"\noutput = 1\n").unwrap();
        let err = PriceTable::load(&path).unwrap_err().to_string();
        assert!(err.contains("p.toml:4"), "{err}");
        std::fs::write(&path, "[[price]]\napi = \"mistral\"\nmodel = \"m\"\ninput = 1\noutput = 1\n").unwrap();
        assert!(PriceTable::load(&path).unwrap_err().to_string().contains("mistral"));
    }
}

//! Optimizer models: the LLM that reads failures and writes new prompts.
//!
//! `--optimizer` takes an [`OptimizerSpec`]: `openai:MODEL` (any OpenAI-compatible chat
//! completions endpoint: `OpenAI`, vLLM, llama-server, ollama's `/v1`), `anthropic:MODEL` (the
//! Messages API), `local:PATH-or-known-name` (a GGUF run in-process through the engines) or
//! `none` (LLM-free proposers only).
//!
//! Everything here is synchronous for the loop; the HTTP clients own a small tokio runtime and
//! block on it, so async stays at the network edge.

pub mod http;
pub mod local;
pub mod prices;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What `--optimizer` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerSpec {
    None,
    #[serde(rename = "openai")]
    OpenAi {
        model: String,
    },
    Anthropic {
        model: String,
    },
    Local {
        model: String,
    },
}

impl OptimizerSpec {
    pub fn is_none(&self) -> bool {
        matches!(self, OptimizerSpec::None)
    }
    /// The model part (empty for `none`).
    pub fn model(&self) -> &str {
        match self {
            OptimizerSpec::None => "",
            OptimizerSpec::OpenAi { model } | OptimizerSpec::Anthropic { model } | OptimizerSpec::Local { model } => model,
        }
    }
}

impl fmt::Display for OptimizerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptimizerSpec::None => f.write_str("none"),
            OptimizerSpec::OpenAi { model } => write!(f, "openai:{model}"),
            OptimizerSpec::Anthropic { model } => write!(f, "anthropic:{model}"),
            OptimizerSpec::Local { model } => write!(f, "local:{model}"),
        }
    }
}

impl FromStr for OptimizerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(OptimizerSpec::None);
        }
        let Some((kind, model)) = s.split_once(':') else {
            return Err(format!("unknown optimizer `{s}`: expected openai:MODEL, anthropic:MODEL, local:PATH-or-name or none"));
        };
        let model = model.trim();
        if model.is_empty() {
            return Err(format!("optimizer `{s}`: the model after `{kind}:` is empty"));
        }
        let model = model.to_owned();
        match kind.to_ascii_lowercase().as_str() {
            "openai" => Ok(OptimizerSpec::OpenAi { model }),
            "anthropic" => Ok(OptimizerSpec::Anthropic { model }),
            "local" => Ok(OptimizerSpec::Local { model }),
            other => Err(format!("unknown optimizer kind `{other}` in `{s}`: expected openai, anthropic, local or none")),
        }
    }
}

/// Who says a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One turn of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// One call to the optimizer model. Serialized (canonical JSON) it is the cache key of the
/// call, so a resumed run never pays for the same call twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub temperature: f32,
    pub max_tokens: u32,
    /// Sent where the API takes one (OpenAI-compatible servers, local engines).
    pub seed: Option<u64>,
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// HTTP attempts it took (1 = no retry).
    pub attempts: u32,
    /// Wall time of the call, retries and waits included.
    pub latency_ms: f64,
}

/// Why a call gave no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// Retrying cannot help: bad credentials (401/403), unknown model or bad request (4xx other
    /// than 408/409/429), a local model that fails to load.
    #[error("{0}")]
    Fatal(String),
    /// Transport errors, timeouts, 429 and 5xx, still failing after every attempt.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    /// Answers arrived but were empty or not the API's JSON, every attempt.
    #[error("malformed answer after {attempts} attempts: {detail}")]
    Malformed { attempts: u32, detail: String },
}

/// An optimizer model. `complete` retries internally (see [`http::RetryPolicy`]).
pub trait Optimizer: Send {
    /// `openai:MODEL at http://host/v1`, never a key.
    fn describe(&self) -> String;
    fn complete(&mut self, req: &ChatRequest) -> Result<ChatReply, CallError>;
    /// One cheap call (a 1-token completion) that checks reachability and credentials.
    fn canary(&mut self) -> Result<ChatReply, CallError> {
        let req = ChatRequest {
            system: None,
            messages: vec![Message { role: Role::User, content: "Reply with OK.".into() }],
            temperature: 0.0,
            max_tokens: 1,
            seed: Some(0),
        };
        self.complete(&req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for s in ["none", "openai:gpt-4o-mini", "anthropic:claude-sonnet-4-5", "local:gemma3-270m", "local:/m/x.gguf"] {
            let spec: OptimizerSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!("NONE".parse::<OptimizerSpec>().unwrap(), OptimizerSpec::None);
        let err = "gpt4".parse::<OptimizerSpec>().unwrap_err();
        assert!(err.contains("openai:MODEL"), "{err}");
        assert!("openai:".parse::<OptimizerSpec>().unwrap_err().contains("empty"));
        assert!("mistral:x".parse::<OptimizerSpec>().unwrap_err().contains("unknown optimizer kind `mistral`"));
    }
}

//! `local:PATH-or-name`: the optimizer model run in-process through the engines, for offline
//! runs. Unconstrained, seeded sampling; costs nothing.

use engines::{ChatMessage, Engine, EngineConfig, EngineKind, Request, Sampling};

use super::{CallError, ChatReply, ChatRequest, Optimizer, Role};

/// A GGUF loaded with the llama engine as the optimizer.
pub struct LocalOptimizer {
    engine: Box<dyn Engine>,
    name: String,
}

impl LocalOptimizer {
    /// Loads `model` (a known name or a GGUF path) with one sequence and an 8k context.
    pub fn load(model: &str, threads: Option<usize>) -> anyhow::Result<Self> {
        let path = crate::models::resolve(model)?;
        let mut config = EngineConfig::new(&path);
        config.batch_size = 1;
        config.n_ctx = Some(8192);
        config.threads = threads;
        config.constraint_backend = engines::ConstraintBackend::None;
        let engine = engines::load(EngineKind::Llama, &config)?;
        Ok(LocalOptimizer { engine, name: model.to_owned() })
    }
}

impl Optimizer for LocalOptimizer {
    fn describe(&self) -> String {
        format!("local:{} (in-process)", self.name)
    }

    fn complete(&mut self, req: &ChatRequest) -> Result<ChatReply, CallError> {
        let t0 = std::time::Instant::now();
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        if let Some(system) = &req.system {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.extend(req.messages.iter().map(|m| match m.role {
            Role::User => ChatMessage::user(m.content.clone()),
            Role::Assistant => ChatMessage::assistant(m.content.clone()),
        }));
        let mut request = Request::new("optimizer", messages, req.max_tokens);
        if req.temperature > 0.0 {
            request.sampling = Sampling::seeded(req.temperature, 0.95, req.seed.unwrap_or(0));
        }
        let mut out = self.engine.generate(std::slice::from_ref(&request));
        let resp = out.pop().ok_or_else(|| CallError::Fatal("the local optimizer returned no response".into()))?.map_err(
            |e| match e {
                // A meta-prompt too long for the context is this call's failure, not the run's.
                engines::EngineError::InputTooLong { .. } => CallError::Exhausted { attempts: 1, last: e.to_string() },
                e => CallError::Fatal(format!("local optimizer: {e}")),
            },
        )?;
        if resp.text.trim().is_empty() {
            return Err(CallError::Malformed { attempts: 1, detail: "empty answer".into() });
        }
        Ok(ChatReply {
            text: resp.text,
            input_tokens: resp.tokens.input as u64,
            output_tokens: resp.tokens.output as u64,
            attempts: 1,
            latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
        })
    }
}

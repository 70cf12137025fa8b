//! Per-example routing over several engines (`--engine auto` with endpoints in the routing
//! table): each request goes to the member a routing rule picks for its prompt length, e.g.
//! short inputs to the in-process engine and long ones to a llama-server with a larger context.
//! Behind the same [`Engine`] trait, so the eval runner and the optimize loop do not know.
//!
//! An example stays on the member it was first routed to while it fits there: the first pass
//! (the baseline's, in an optimize run) pins each example, so a later prompt a few tokens longer
//! or shorter is scored on the same engine as the prompt it is compared with. Only a prompt that
//! no longer fits its pinned member moves, and every response names the member that ran it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::{ChatMessage, Engine, EngineError, EngineInfo, Request, Response};

/// One engine of the set, with the name its responses carry.
pub struct Member {
    /// E.g. `llama` or `server` (what [`Response::engine`] says).
    pub label: String,
    pub engine: Box<dyn Engine>,
}

/// Picks a member for a prompt of `tokens` tokens (output budget not included): an index into
/// the members, or `None` when none fits.
pub type Rule = dyn Fn(usize) -> Option<usize> + Send + Sync;

/// Engines routed per request. Token counts come from the first member (all members serve the
/// same model, so they agree); put an in-process engine first to count without a network call.
pub struct RoutedEngine {
    members: Vec<Member>,
    info: EngineInfo,
    rule: Box<Rule>,
    /// Request id -> the member it was first routed to.
    pins: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for RoutedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.members.iter().map(|m| m.label.as_str()).collect();
        f.debug_struct("RoutedEngine").field("members", &labels).finish_non_exhaustive()
    }
}

impl RoutedEngine {
    /// Routes over `members` with `rule`. The info is the first member's, with the largest
    /// member context and the members' batches added up (a batch is split among them).
    ///
    /// # Errors
    /// No member.
    pub fn new(members: Vec<Member>, rule: Box<Rule>) -> Result<Self, EngineError> {
        let Some(first) = members.first() else {
            return Err(EngineError::Config("per-example routing needs at least one engine".into()));
        };
        let mut info = first.engine.info().clone();
        info.capabilities.max_context = members.iter().map(|m| m.engine.info().capabilities.max_context).max().unwrap_or(0);
        info.capabilities.max_batch = members.iter().map(|m| m.engine.info().capabilities.max_batch.max(1)).sum();
        info.capabilities.prefix_cache = members.iter().any(|m| m.engine.info().capabilities.prefix_cache);
        let parts: Vec<String> =
            members.iter().map(|m| format!("{} (context {})", m.label, m.engine.info().capabilities.max_context)).collect();
        info.model_desc = format!("{}; routed per example over {}", info.model_desc, parts.join(", "));
        info.load_ms = members.iter().map(|m| m.engine.info().load_ms).sum();
        Ok(Self { members, info, rule, pins: Mutex::default() })
    }

    /// The members' labels, in order.
    pub fn labels(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.label.as_str()).collect()
    }

    /// The member for a request: its pin while the prompt fits there (the rule would send it
    /// there or the member's context holds it), else the rule's choice, which becomes the pin.
    fn pick(&self, req: &Request) -> Result<usize, EngineError> {
        let tokens = self.members[0].engine.count_tokens(&req.messages)?;
        let fits = |i: usize| tokens + req.max_tokens as usize <= self.members[i].engine.info().capabilities.max_context;
        let mut pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&i) = pins.get(&req.id) {
            if fits(i) {
                return Ok(i);
            }
        }
        let Some(i) = (self.rule)(tokens).filter(|&i| i < self.members.len()) else {
            let max = self.members.iter().map(|m| m.engine.info().capabilities.max_context).max().unwrap_or(0);
            return Err(EngineError::InputTooLong {
                tokens,
                max: max.saturating_sub(req.max_tokens as usize),
                context: max,
                max_tokens: req.max_tokens as usize,
            });
        };
        pins.insert(req.id.clone(), i);
        Ok(i)
    }
}

impl Engine for RoutedEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError> {
        self.members[0].engine.count_tokens(messages)
    }

    /// Splits the batch by member and runs the parts at the same time (each member owns its
    /// threads or connections); answers come back in request order, each naming its member.
    fn generate(&self, requests: &[Request]) -> Vec<Result<Response, EngineError>> {
        let mut out: Vec<Option<Result<Response, EngineError>>> = (0..requests.len()).map(|_| None).collect();
        let mut parts: Vec<Vec<usize>> = vec![Vec::new(); self.members.len()];
        for (i, req) in requests.iter().enumerate() {
            match self.pick(req) {
                Ok(m) => parts[m].push(i),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let answers: Vec<(usize, Vec<Result<Response, EngineError>>)> = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .enumerate()
                .filter(|(_, idx)| !idx.is_empty())
                .map(|(m, idx)| {
                    let batch: Vec<Request> = idx.iter().map(|&i| requests[i].clone()).collect();
                    let engine = &self.members[m].engine;
                    (m, s.spawn(move || engine.generate(&batch)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(m, h)| {
                    let res = h.join().unwrap_or_else(|_| {
                        parts[m]
                            .iter()
                            .map(|_| Err(EngineError::Decode(format!("engine {} panicked", self.members[m].label))))
                            .collect()
                    });
                    (m, res)
                })
                .collect()
        });
        for (m, res) in answers {
            let mut res = res.into_iter();
            for &i in &parts[m] {
                let r = res.next().unwrap_or_else(|| {
                    Err(EngineError::Config(format!("engine {} returned fewer responses than requests", self.members[m].label)))
                });
                out[i] = Some(r.map(|mut r| {
                    r.engine = Some(self.members[m].label.clone());
                    r
                }));
            }
        }
        out.into_iter().map(|r| r.unwrap_or_else(|| Err(EngineError::Config("a request was not routed".into())))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScriptedEngine;

    /// A scripted member with `ctx` tokens of context that answers with its own name.
    fn member(label: &'static str, ctx: usize) -> (Member, ScriptedEngine) {
        let engine = ScriptedEngine::new(move |_| Ok(format!("{{\"by\": \"{label}\"}}"))).with_max_batch(2).with_max_context(ctx);
        (Member { label: label.into(), engine: Box::new(engine.clone()) }, engine)
    }

    fn req(id: &str, words: usize) -> Request {
        Request::new(id, vec![ChatMessage::user("w ".repeat(words))], 4)
    }

    /// Short prompts (up to 100 tokens) to the first member, longer ones to the second.
    fn routed() -> (RoutedEngine, ScriptedEngine, ScriptedEngine) {
        let (a, ea) = member("local", 110);
        let (b, eb) = member("server", 10_000);
        let rule = Box::new(|tokens: usize| match tokens {
            0..=100 => Some(0),
            101..=9000 => Some(1),
            _ => None,
        });
        (RoutedEngine::new(vec![a, b], rule).unwrap(), ea, eb)
    }

    #[test]
    fn short_prompts_stay_local_long_ones_go_to_the_server_in_request_order() {
        let (engine, local, server) = routed();
        assert_eq!(engine.info().capabilities.max_context, 10_000);
        assert_eq!(engine.info().capabilities.max_batch, 4);
        let out = engine.generate(&[req("a", 10), req("b", 500), req("c", 50), req("d", 20_000)]);
        let by: Vec<Option<String>> = out.iter().map(|r| r.as_ref().ok().and_then(|r| r.engine.clone())).collect();
        assert_eq!(by, [Some("local".into()), Some("server".into()), Some("local".into()), None]);
        assert_eq!(out[1].as_ref().unwrap().id, "b");
        assert!(out[1].as_ref().unwrap().text.contains("server"));
        assert!(matches!(out[3], Err(EngineError::InputTooLong { tokens: 20_000, .. })));
        assert_eq!((local.requests(), server.requests()), (2, 1));
    }

    #[test]
    fn an_example_stays_on_its_first_engine_while_it_fits_there() {
        let (engine, _, _) = routed();
        let by = |r: &Request| engine.generate(std::slice::from_ref(r)).pop().unwrap().unwrap().engine.unwrap();
        assert_eq!(by(&req("x", 99)), "local");
        // A longer prompt for the same example (another instruction) that the rule would send
        // to the server still fits the local context: same engine as before.
        assert_eq!(by(&req("x", 102)), "local");
        // One that no longer fits moves, and is pinned there.
        assert_eq!(by(&req("x", 200)), "server");
        assert_eq!(by(&req("x", 50)), "server");
        assert_eq!(by(&req("y", 102)), "server");
    }

    #[test]
    fn no_member_is_an_error() {
        assert!(RoutedEngine::new(Vec::new(), Box::new(|_| Some(0))).is_err());
    }
}

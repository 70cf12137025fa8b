//! The router: which engine runs a pass, and with what context. `--engine` is an
//! [`EngineChoice`]; `auto` reads the routing table that `promptloop calibrate` wrote and picks
//! the engine predicted fastest among those compiled in that fit, capping the context so the
//! batch fits the memory budget. Takes plain values, no command-line types.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use engines::memory::Machine;
use engines::{EngineKind, WeightFormat};
use serde::{Deserialize, Serialize};

use crate::calibrate::{self, EngineEntry, RoutingTable};
use crate::fingerprint::model_fingerprint;

/// `--engine`: a kind, a kind's variant (`candle:q8_0`: the weight format it computes with),
/// `auto`, a fleet of llama-servers (`server:URL[,URL...]`), or of OpenAI-compatible servers
/// (`openai:URL[,URL...]`: vLLM, `SGLang`, llama-server's `/v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineChoice {
    Auto,
    Kind(EngineKind),
    Variant(EngineKind, WeightFormat),
    /// The `server` engine over these base URLs (checked when it connects).
    Servers(Vec<String>),
    /// The `server` engine speaking OpenAI-compatible chat completions to these base URLs.
    OpenAi(Vec<String>),
}

impl EngineChoice {
    /// The weight format asked for (`gguf` unless a variant names another).
    pub fn weights(&self) -> WeightFormat {
        match self {
            EngineChoice::Variant(_, w) => *w,
            _ => WeightFormat::Gguf,
        }
    }

    /// The servers' URLs (empty unless `server:...` or `openai:...`).
    pub fn servers(&self) -> &[String] {
        match self {
            EngineChoice::Servers(urls) | EngineChoice::OpenAi(urls) => urls,
            _ => &[],
        }
    }

    /// The API the servers speak.
    pub fn server_api(&self) -> engines::ServerApi {
        match self {
            EngineChoice::OpenAi(_) => engines::ServerApi::OpenAi,
            _ => engines::ServerApi::Native,
        }
    }
}

impl FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(EngineChoice::Auto);
        }
        for (prefix, openai) in [("server:", false), ("openai:", true)] {
            if let Some(urls) = s.strip_prefix(prefix) {
                let urls: Vec<String> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
                if urls.is_empty() {
                    return Err(format!("{prefix} needs at least one URL ({prefix}http://HOST:PORT[,URL...])"));
                }
                return Ok(if openai { EngineChoice::OpenAi(urls) } else { EngineChoice::Servers(urls) });
            }
        }
        if s.eq_ignore_ascii_case("openai") {
            return Err("openai needs URLs: openai:http://HOST:PORT[,URL...]".into());
        }
        if s.eq_ignore_ascii_case("server") {
            return Err("server needs URLs: server:http://HOST:PORT[,URL...]".into());
        }
        let Some((kind, variant)) = s.split_once(':') else {
            return s.parse().map(EngineChoice::Kind).map_err(|e| format!("{e}, or auto"));
        };
        let kind: EngineKind = kind.parse()?;
        let weights: WeightFormat = variant.parse()?;
        if !kind.weight_formats().contains(&weights) {
            let names: Vec<String> =
                EngineKind::ALL.iter().flat_map(|k| k.weight_formats().iter().skip(1).map(move |w| format!("{k}:{w}"))).collect();
            return Err(format!("engine `{kind}` has no variant `{weights}` (the variants: {})", names.join(", ")));
        }
        Ok(EngineChoice::Variant(kind, weights))
    }
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineChoice::Auto => f.write_str("auto"),
            EngineChoice::Kind(k) => write!(f, "{k}"),
            EngineChoice::Variant(k, w) => write!(f, "{k}:{w}"),
            EngineChoice::Servers(urls) => write!(f, "server:{}", urls.join(",")),
            EngineChoice::OpenAi(urls) => write!(f, "openai:{}", urls.join(",")),
        }
    }
}

/// Per-example routing: each prompt goes to the member predicted fastest among those whose
/// threshold holds it (the routing table's rule, per example instead of per run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerExample {
    /// The output tokens the predictions assume (the table's).
    pub max_tokens: u32,
    /// In-process members first (they count tokens without a network call).
    pub members: Vec<RouteMember>,
}

/// One engine of a [`PerExample`] set, with what the routing table learned about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteMember {
    pub engine: EngineKind,
    /// Context per sequence an in-process member is opened with (a server has its own).
    pub ctx: Option<u32>,
    /// The longest prompt (tokens) routed to it.
    pub max_input_tokens: usize,
    /// The endpoints of a `server` member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "engines::ServerApi::is_native")]
    pub server_api: engines::ServerApi,
    /// Prefill milliseconds per input token against input tokens, as in the table.
    pub prefill_ms_per_token: calibrate::LinearFit,
    pub decode_tok_s: f64,
}

impl RouteMember {
    /// `llama`, or `server` (what each record's `engine` says).
    pub fn label(&self) -> String {
        self.engine.to_string()
    }

    /// Predicted milliseconds of one example of `input` tokens with `output` tokens out.
    pub fn predicted_ms(&self, input: usize, output: u32) -> f64 {
        calibrate::predicted_ms(&self.prefill_ms_per_token, self.decode_tok_s, input, output)
    }
}

impl PerExample {
    /// The member for a prompt of `tokens` tokens: the fastest predicted among those whose
    /// threshold holds it; `None` when none does.
    pub fn pick(&self, tokens: usize) -> Option<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.max_input_tokens > 0 && tokens <= m.max_input_tokens)
            .min_by(|(_, a), (_, b)| a.predicted_ms(tokens, self.max_tokens).total_cmp(&b.predicted_ms(tokens, self.max_tokens)))
            .map(|(i, _)| i)
    }

    /// In words, for the router's note and the report.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let at = if m.servers.is_empty() { String::new() } else { format!(" at {}", m.servers.join(",")) };
                format!("{}{at} up to {} tokens", m.label(), m.max_input_tokens)
            })
            .collect();
        format!("each example routed to the fastest that fits: {}", parts.join("; "))
    }
}

/// What to route.
#[derive(Debug, Clone)]
pub struct RouteRequest<'a> {
    pub choice: EngineChoice,
    /// The routing table (`None`: the model's default one, when it exists).
    pub table: Option<&'a Path>,
    /// `--ctx`, when given.
    pub ctx: Option<u32>,
    pub model_path: &'a Path,
    /// Sequences decoded together.
    pub batch: u32,
}

/// The engine and context a choice resolves to, and what the routing table said.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub kind: EngineKind,
    /// Context per sequence: `--ctx`, else capped so the predicted peak fits the table's
    /// budget with its margin.
    pub ctx: Option<u32>,
    pub note: Option<String>,
    /// Each example routed among these (the table holds endpoints); `kind` and `ctx` are then
    /// the first member's.
    pub per_example: Option<PerExample>,
}

/// A routing failure; always the user's input (a bad table, a budget nothing fits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(pub String);

/// Resolves an engine choice for `req.batch` sequences. `auto` reads the routing table: a
/// stale table is reported and ignored; a valid one picks the engine predicted fastest among
/// those compiled in that fit a typical input, and caps the context so the batch fits the
/// budget. Without a table, `auto` is llama.
///
/// # Errors
/// The model file cannot be read, the table is bad, or nothing fits its budget.
pub fn route(req: &RouteRequest<'_>) -> Result<Routed, RouteError> {
    let kind = match req.choice {
        EngineChoice::Kind(k) | EngineChoice::Variant(k, _) => {
            return Ok(Routed { kind: k, ctx: req.ctx, note: None, per_example: None })
        }
        EngineChoice::Servers(_) | EngineChoice::OpenAi(_) => {
            return Ok(Routed { kind: EngineKind::Server, ctx: req.ctx, note: None, per_example: None })
        }
        EngineChoice::Auto => EngineKind::Llama,
    };
    let fingerprint = model_fingerprint(req.model_path).map_err(|e| RouteError(format!("reading the model: {e}")))?;
    let path: PathBuf = if let Some(p) = req.table {
        p.to_path_buf()
    } else {
        let p = calibrate::default_table_path(&fingerprint);
        if !p.exists() {
            return Ok(Routed { kind, ctx: req.ctx, note: None, per_example: None });
        }
        p
    };
    let table = RoutingTable::load(&path).map_err(|err| RouteError(format!("--routing: {err}")))?;
    let versions: Vec<(EngineKind, String)> =
        engines::compiled_engines().into_iter().filter_map(|k| engines::backend_version(k).map(|v| (k, v.to_owned()))).collect();
    let stale = table.stale_reasons(&fingerprint, &Machine::current(), &versions);
    if !stale.is_empty() {
        let note = format!(
            "routing table {} is stale ({}); ignoring it: run `promptloop calibrate` again",
            path.display(),
            stale.join("; ")
        );
        return Ok(Routed { kind, ctx: req.ctx, note: Some(note), per_example: None });
    }
    let available = engines::compiled_engines();
    if table.engines.iter().any(|e| !e.servers.is_empty()) {
        return per_example(&table, &path, req);
    }
    let typical = 1024.min(table.engines.iter().map(|x| x.max_input_tokens).max().unwrap_or(0));
    let calibrate::Route::Engine(kind) = table.route(typical, &available) else {
        return Err(RouteError(format!(
            "routing table {}: no engine compiled into this build fits the {} MiB budget",
            path.display(),
            table.budget_bytes >> 20
        )));
    };
    let entry = table.engine(kind).expect("routed engines are in the table");
    let ctx = budget_ctx(entry, &table, &path, req)?;
    let batch = req.batch.max(1);
    let note = format!(
        "routed by {}: engine {kind}, context {} tokens per sequence x {batch} (budget {} MiB, margin {:.0}%)",
        path.display(),
        ctx,
        table.budget_bytes >> 20,
        table.margin * 100.0
    );
    Ok(Routed { kind, ctx: Some(ctx), note: Some(note), per_example: None })
}

/// The context per sequence an in-process entry gets in the table's budget: at most 16384 and
/// `--ctx`; an error when a batch leaves too little.
fn budget_ctx(entry: &EngineEntry, table: &RoutingTable, path: &Path, req: &RouteRequest<'_>) -> Result<u32, RouteError> {
    let total = calibrate::max_ctx_for_budget(&entry.memory, table.budget_bytes, table.margin);
    let batch = req.batch.max(1);
    let per_seq = (total / batch as usize).min(16_384);
    if per_seq < 256 {
        return Err(RouteError(format!(
            "routing table {}: a batch of {batch} leaves {per_seq} context tokens per sequence in the {} MiB budget; lower --batch-size",
            path.display(),
            table.budget_bytes >> 20
        )));
    }
    Ok(req.ctx.map_or(per_seq as u32, |c| c.min(per_seq as u32)))
}

/// `auto` over a table that holds endpoints: every entry usable here becomes a member (the
/// in-process ones first, each opened with the context its threshold needs, within the
/// budget), and each example is routed among them.
fn per_example(table: &RoutingTable, path: &Path, req: &RouteRequest<'_>) -> Result<Routed, RouteError> {
    let mut members = Vec::new();
    for e in table.engines.iter().filter(|e| e.kind.is_compiled() && e.max_input_tokens > 0) {
        let ctx = if e.servers.is_empty() {
            let need = u32::try_from(e.max_input_tokens + table.max_tokens as usize + 16).unwrap_or(u32::MAX);
            Some(budget_ctx(e, table, path, req)?.min(need))
        } else {
            None
        };
        members.push(RouteMember {
            engine: e.kind,
            ctx,
            max_input_tokens: e.max_input_tokens,
            servers: e.servers.clone(),
            server_api: e.server_api,
            prefill_ms_per_token: e.prefill_ms_per_token,
            decode_tok_s: e.decode_tok_s,
        });
    }
    members.sort_by_key(|m| !m.servers.is_empty());
    let Some(first) = members.first() else {
        return Err(RouteError(format!("routing table {}: no engine of it is compiled into this build", path.display())));
    };
    let (kind, ctx) = (first.engine, first.ctx);
    let per = PerExample { max_tokens: table.max_tokens, members };
    let note = format!("routed by {}: {}", path.display(), per.describe());
    Ok(Routed { kind, ctx, note: Some(note), per_example: Some(per) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print_back() {
        for s in ["auto", "llama", "candle", "candle:q8_0", "mlx:f32", "server:http://127.0.0.1:8081,http://127.0.0.1:8082"] {
            assert_eq!(s.parse::<EngineChoice>().unwrap().to_string(), s);
        }
        assert_eq!("candle:q8_0".parse::<EngineChoice>().unwrap().weights(), WeightFormat::Q8_0);
        assert!("llama:q8_0".parse::<EngineChoice>().unwrap_err().contains("no variant"));
        assert!("vllm".parse::<EngineChoice>().unwrap_err().contains("or auto"));
        let fleet = "server:http://a:1, http://b:2,".parse::<EngineChoice>().unwrap();
        assert_eq!(fleet.servers(), ["http://a:1", "http://b:2"]);
        assert_eq!(fleet.weights(), WeightFormat::Gguf);
        assert!("server".parse::<EngineChoice>().unwrap_err().contains("needs URLs"));
        assert!("server:".parse::<EngineChoice>().unwrap_err().contains("at least one URL"));
    }

    #[test]
    fn an_explicit_engine_is_not_routed_and_a_bad_table_is_input() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"GGUF").unwrap();
        let req = |choice, table| RouteRequest { choice, table, ctx: Some(512), model_path: &model, batch: 2 };
        let r = route(&req(EngineChoice::Kind(EngineKind::Candle), None)).unwrap();
        assert_eq!(r, Routed { kind: EngineKind::Candle, ctx: Some(512), note: None, per_example: None });
        let bad = dir.path().join("routing.toml");
        std::fs::write(&bad, "not = [valid").unwrap();
        let r = route(&req(EngineChoice::Servers(vec!["http://a:1".into()]), None)).unwrap();
        assert_eq!(r.kind, EngineKind::Server);
        let err = route(&req(EngineChoice::Auto, Some(&bad))).unwrap_err();
        assert!(err.0.starts_with("--routing:"), "{err}");
        let missing = dir.path().join("missing.gguf");
        let err = route(&RouteRequest { choice: EngineChoice::Auto, table: None, ctx: None, model_path: &missing, batch: 1 });
        assert!(err.unwrap_err().0.contains("missing.gguf"));
    }

    fn entry(kind: EngineKind, max_input: usize, prefill_ms: f64, servers: &[&str]) -> EngineEntry {
        let fit = |intercept, slope| calibrate::LinearFit { intercept, slope, max_rel_error: 0.0 };
        EngineEntry {
            kind,
            backend_version: engines::backend_version(kind).unwrap_or("absent").into(),
            memory: if servers.is_empty() { fit(100e6, 40e3) } else { fit(0.0, 0.0) },
            prefill_ms_per_token: fit(prefill_ms, 0.0),
            decode_tok_s: 50.0,
            max_input_tokens: max_input,
            check: None,
            points: Vec::new(),
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            server_api: engines::ServerApi::Native,
        }
    }

    #[test]
    fn a_table_with_endpoints_routes_each_example_short_ones_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"GGUF").unwrap();
        let table = RoutingTable {
            version: calibrate::TABLE_VERSION,
            created: "now".into(),
            promptloop_version: "test".into(),
            machine: Machine::current(),
            model: model_fingerprint(&model).unwrap(),
            budget_bytes: 8 << 30,
            margin: 0.1,
            max_tokens: 64,
            // The server first in the table, slower per token but with the larger context.
            engines: vec![
                entry(EngineKind::Server, 8000, 2.0, &["http://a:1", "http://b:2"]),
                entry(EngineKind::Llama, 1200, 1.0, &[]),
            ],
        };
        let path = dir.path().join("routing.toml");
        table.save(&path).unwrap();
        let req = RouteRequest { choice: EngineChoice::Auto, table: Some(&path), ctx: None, model_path: &model, batch: 2 };
        let r = route(&req).unwrap();
        let per = r.per_example.expect("routed per example");
        assert_eq!(r.kind, EngineKind::Llama, "the in-process member comes first");
        assert_eq!(per.members.len(), 2);
        assert_eq!(per.members[0].ctx, Some(1200 + 64 + 16), "opened with the context its threshold needs");
        assert_eq!((per.members[1].engine, per.members[1].ctx), (EngineKind::Server, None));
        assert_eq!(per.members[1].servers, ["http://a:1", "http://b:2"]);
        assert_eq!(per.pick(500), Some(0), "short: in-process, predicted faster");
        assert_eq!(per.pick(1200), Some(0));
        assert_eq!(per.pick(1201), Some(1), "past the in-process threshold: the server");
        assert_eq!(per.pick(8001), None);
        assert!(r.note.unwrap().contains("server at http://a:1,http://b:2 up to 8000 tokens"));
        // Without endpoints, auto still picks one engine per run.
        let mut single = table.clone();
        single.engines.remove(0);
        single.save(&path).unwrap();
        let r = route(&req).unwrap();
        assert!(r.per_example.is_none());
        assert_eq!(r.kind, EngineKind::Llama);
    }
}

//! The MLX worker thread: picks the device, loads the model and tokenizer, builds the
//! llguidance tables once, and serves jobs until the handle is dropped (the request path is
//! [`crate::sequential`]'s).
//!
//! One sequence decodes at a time (batch 1). The KV cache is a list of immutable MLX arrays, so
//! it is a sequence's state: a group's common prefix is prefilled once and each request
//! continues from a clone of that cache.

use std::sync::mpsc;
use std::time::Instant;

use mlx_rs::{Device, Stream};

use super::model::{HParams, KvCache, Model};
use super::BACKEND_VERSION;
use crate::sequential::{self, load_err, ms, Job, SeqModel, Sequential};
use crate::{EngineConfig, EngineError, EngineInfo, EngineKind, WeightFormat};

const KIND: EngineKind = EngineKind::Mlx;

/// The device MLX computes on: the GPU (Metal) when this MLX build has one, else the CPU.
fn pick_device() -> (Device, &'static str) {
    if Stream::try_default_on_device(&Device::gpu()).is_ok() {
        (Device::gpu(), "gpu")
    } else {
        (Device::cpu(), "cpu")
    }
}

/// Entry point of the worker thread.
pub(super) fn run(cfg: &EngineConfig, jobs: &mpsc::Receiver<Job>, ready: &mpsc::Sender<Result<EngineInfo, EngineError>>) {
    let (device, device_name) = pick_device();
    // Every array of this worker is made under this device's default stream, on this thread.
    mlx_rs::with_device(device, || sequential::serve(KIND, cfg, || load(cfg, device_name), jobs, ready));
}

impl SeqModel for Model {
    type State = KvCache;

    fn empty(&self) -> KvCache {
        KvCache::default()
    }

    fn len(state: &KvCache) -> usize {
        state.len()
    }

    fn forward(&self, state: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        Model::forward(self, tokens, state).map_err(|e| EngineError::Decode(format!("mlx: {e}")))
    }
}

fn load(cfg: &EngineConfig, device: &'static str) -> Result<(Sequential<Model>, EngineInfo), EngineError> {
    let t0 = Instant::now();
    let (content, _) = crate::gguf_header::read_header(&cfg.model).map_err(|e| load_err(KIND, cfg, e))?;
    let arch = crate::gguf_header::check_architecture(&content, "mlx").map_err(|e| load_err(KIND, cfg, e))?;
    let (tokenizer, compiler) = sequential::tokenizer_and_compiler(KIND, cfg, &content, &arch)?;
    let meta_u = |k: &str| content.metadata.get(k).and_then(|v| v.to_u32().ok()).map(|v| v as usize);
    let train_context = meta_u(&format!("{arch}.context_length")).unwrap_or(4096);
    let n_ctx = cfg.n_ctx.map_or_else(|| train_context.min(16_384), |n| n as usize);
    if n_ctx < 16 {
        return Err(EngineError::Config(format!("context of {n_ctx} tokens is too small")));
    }
    let hp = HParams::from_gguf(&content, &arch).map_err(|e| load_err(KIND, cfg, e))?;
    let model = Model::load(&cfg.model, hp.clone(), cfg.weights == WeightFormat::F32).map_err(|e| load_err(KIND, cfg, e))?;
    let n_params: u64 = content.tensor_infos.values().map(|t| t.shape.elem_count() as u64).sum();
    let meta_s = |k: &str| content.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
    let name = meta_s("general.name").unwrap_or_else(|| "unnamed".into());
    // f32 K and V for every layer, one sequence (plus a shared prefix's while it is reused).
    let kv_cache_bytes = hp.n_layer as u64 * n_ctx as u64 * hp.n_head_kv as u64 * hp.head_dim as u64 * 2 * 4;
    let info = EngineInfo {
        kind: KIND,
        weights: cfg.weights,
        backend_version: BACKEND_VERSION.into(),
        model_path: cfg.model.clone(),
        model_desc: format!(
            "{name} ({arch}, {:.0}M params, MLX {device}, weights {})",
            n_params as f64 / 1e6,
            model.describe_weights()
        ),
        model_bytes: std::fs::metadata(&cfg.model).map_or(0, |m| m.len()),
        n_params,
        vocab_size: tokenizer.vocab_size(),
        chat_template: tokenizer.format_name.clone(),
        // MLX's CPU kernels and BLAS choose their own threads; this is what they may use.
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        constraint_backend: cfg.constraint_backend,
        capabilities: sequential::capabilities(n_ctx),
        kv_cache_bytes,
        train_context,
        load_ms: ms(t0),
    };
    Ok((Sequential::new(model, tokenizer, compiler, n_ctx, cfg), info))
}

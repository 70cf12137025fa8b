//! The llama architecture written with mlx-rs building blocks: weights straight from the GGUF
//! (MLX keeps `Q4_0`/`Q4_1`/`Q8_0` tensors quantized, as packed `uint32` words plus per-group
//! scales and biases), and a forward pass of `RMSNorm`, `RoPE`, grouped-query attention over a KV
//! cache, and a `SwiGLU` MLP.
//!
//! llama.cpp's GGUF converter permutes the Q and K rows so that its rotary embedding rotates
//! *adjacent* pairs of dimensions (its `LLAMA_ROPE_TYPE_NORM`); MLX calls that layout
//! `traditional`. The logit test in `engines/tests/mlx.rs` checks the result against llama.cpp.

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use mlx_rs::error::Exception;
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::io::GgufFile;
use mlx_rs::ops::{self, indexing::take_axis};
use mlx_rs::{Array, Dtype};

/// MLX's GGUF loader splits every quantized tensor into groups of this many weights.
const GROUP_SIZE: i32 = 32;

/// From this many tokens in one forward call, quantized matrices are dequantized for the call
/// and multiplied with a BLAS sgemm (multi-threaded) instead of MLX's CPU `quantized_matmul`
/// (one thread): dequantizing costs one pass over the weights, the product `tokens` passes.
const DENSE_FROM_TOKENS: i32 = 8;

type Res<T> = Result<T, Exception>;

/// The hyper-parameters the forward pass needs, from the GGUF metadata.
#[derive(Debug, Clone)]
pub(crate) struct HParams {
    pub(crate) n_layer: usize,
    pub(crate) n_head: i32,
    pub(crate) n_head_kv: i32,
    pub(crate) head_dim: i32,
    pub(crate) n_embd: i32,
    pub(crate) rms_eps: f32,
    pub(crate) rope_base: f32,
    pub(crate) rope_dims: i32,
}

impl HParams {
    /// Reads `{arch}.*` keys; a missing required key is an error naming it.
    pub(crate) fn from_gguf(content: &Content, arch: &str) -> Result<Self, String> {
        let get = |key: &str| {
            let full = format!("{arch}.{key}");
            content.metadata.get(&full).ok_or_else(|| format!("missing metadata key `{full}`"))
        };
        let int = |key: &str| -> Result<i32, String> {
            get(key)?.to_u32().map(|v| v as i32).map_err(|e| format!("metadata `{arch}.{key}`: {e}"))
        };
        let float =
            |key: &str| -> Result<f32, String> { get(key)?.to_f32().map_err(|e| format!("metadata `{arch}.{key}`: {e}")) };
        let n_embd = int("embedding_length")?;
        let n_head = int("attention.head_count")?;
        let n_head_kv = get("attention.head_count_kv").map_or(Ok(n_head), |_| int("attention.head_count_kv"))?;
        if n_head <= 0 || n_head_kv <= 0 || n_embd % n_head != 0 || n_head % n_head_kv != 0 {
            return Err(format!("unsupported head layout: {n_head} heads, {n_head_kv} KV heads, width {n_embd}"));
        }
        let head_dim = n_embd / n_head;
        let rope_dims = get("rope.dimension_count").map_or(Ok(head_dim), |_| int("rope.dimension_count"))?;
        Ok(Self {
            n_layer: int("block_count")? as usize,
            n_head,
            n_head_kv,
            head_dim,
            n_embd,
            rms_eps: float("attention.layer_norm_rms_epsilon")?,
            rope_base: get("rope.freq_base").map_or(Ok(10_000.0), |_| float("rope.freq_base"))?,
            rope_dims,
        })
    }
}

/// A weight matrix `[out, in]`: quantized as MLX loaded it, or dense (f16/f32 tensors).
enum Linear {
    Quantized { weight: Array, scales: Array, biases: Array, bits: i32 },
    Dense(Array),
}

impl Linear {
    /// `x @ W^T` for `x` of shape `[1, tokens, in]`.
    fn forward(&self, x: &Array) -> Res<Array> {
        match self {
            Linear::Quantized { weight, scales, biases, bits } if x.dim(-2) >= DENSE_FROM_TOKENS => {
                x.matmul(ops::dequantize(weight, scales, biases, GROUP_SIZE, *bits)?.t())
            }
            Linear::Quantized { weight, scales, biases, bits } => {
                ops::quantized_matmul(x, weight, scales, biases, true, GROUP_SIZE, *bits)
            }
            Linear::Dense(w) => x.matmul(w.t()),
        }
    }

    /// Rows `ids` of the matrix, dequantized to f32 (the embedding lookup).
    fn rows(&self, ids: &Array) -> Res<Array> {
        match self {
            Linear::Quantized { weight, scales, biases, bits } => {
                let w = take_axis(weight, ids, 0)?;
                let s = take_axis(scales, ids, 0)?;
                let b = take_axis(biases, ids, 0)?;
                ops::dequantize(&w, &s, &b, GROUP_SIZE, *bits)?.as_dtype(Dtype::Float32)
            }
            Linear::Dense(w) => take_axis(w, ids, 0),
        }
    }

    /// Storage format, for the engine's description (`q4` for 4-bit groups, …).
    fn format(&self) -> String {
        match self {
            Linear::Quantized { bits, .. } => format!("q{bits} (group {GROUP_SIZE})"),
            Linear::Dense(w) => format!("{:?}", w.dtype()).to_ascii_lowercase(),
        }
    }
}

struct Layer {
    attn_norm: Array,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Array,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Keys and values of every layer, `[1, n_head_kv, len, head_dim]` each. Cloning is cheap (MLX
/// arrays are reference-counted and immutable), so a prefilled prefix can be shared.
#[derive(Clone, Default)]
pub(crate) struct KvCache {
    layers: Vec<(Array, Array)>,
    len: usize,
}

impl KvCache {
    /// Positions already in the cache.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// A llama-architecture model held as MLX arrays.
pub(crate) struct Model {
    pub(crate) hp: HParams,
    embed: Linear,
    layers: Vec<Layer>,
    norm: Array,
    /// `None`: the output projection is tied to the token embedding.
    output: Option<Linear>,
}

impl Model {
    /// Loads every tensor of `path` with MLX's GGUF reader; with `dense`, quantized matrices
    /// are dequantized to f32 once here (the `mlx:f32` variant: every matmul, decode's included,
    /// goes through BLAS on every core instead of MLX's one-threaded CPU `quantized_matmul`, for
    /// about 4x the weights' memory).
    pub(crate) fn load(path: &Path, hp: HParams, dense_weights: bool) -> Result<Self, String> {
        let file = GgufFile::load(path).map_err(|e| format!("MLX cannot load the GGUF: {e}"))?;
        let dense = |name: &str| -> Result<Array, String> {
            let a = file
                .get_array(name)
                .map_err(|e| format!("tensor `{name}`: {e}"))?
                .ok_or_else(|| format!("missing tensor `{name}`"))?;
            a.as_dtype(Dtype::Float32).map_err(|e| format!("tensor `{name}`: {e}"))
        };
        let linear = |base: &str| -> Result<Linear, String> {
            let name = format!("{base}.weight");
            let weight = file
                .get_array(&name)
                .map_err(|e| format!("tensor `{name}`: {e}"))?
                .ok_or_else(|| format!("missing tensor `{name}`"))?;
            if weight.dtype() != Dtype::Uint32 {
                return Ok(Linear::Dense(weight.as_dtype(Dtype::Float32).map_err(|e| e.to_string())?));
            }
            let scales = dense(&format!("{base}.scales"))?;
            let biases = dense(&format!("{base}.biases"))?;
            // 32-bit words per row * 32 bits = bits per weight * weights per row.
            let in_features = scales.shape()[1] * GROUP_SIZE;
            let bits = weight.shape()[1] * 32 / in_features;
            if ![2, 3, 4, 6, 8].contains(&bits) {
                return Err(format!("tensor `{name}`: {bits}-bit groups are not supported"));
            }
            if dense_weights {
                let w = ops::dequantize(&weight, &scales, &biases, GROUP_SIZE, bits)
                    .and_then(|w| w.as_dtype(Dtype::Float32))
                    .map_err(|e| format!("tensor `{name}`: {e}"))?;
                // Materialised now, so the quantized arrays are freed as this loop goes.
                w.eval().map_err(|e| format!("tensor `{name}`: {e}"))?;
                return Ok(Linear::Dense(w));
            }
            Ok(Linear::Quantized { weight, scales, biases, bits })
        };
        let layers = (0..hp.n_layer)
            .map(|i| {
                let b = format!("blk.{i}");
                Ok(Layer {
                    attn_norm: dense(&format!("{b}.attn_norm.weight"))?,
                    q: linear(&format!("{b}.attn_q"))?,
                    k: linear(&format!("{b}.attn_k"))?,
                    v: linear(&format!("{b}.attn_v"))?,
                    o: linear(&format!("{b}.attn_output"))?,
                    ffn_norm: dense(&format!("{b}.ffn_norm.weight"))?,
                    gate: linear(&format!("{b}.ffn_gate"))?,
                    up: linear(&format!("{b}.ffn_up"))?,
                    down: linear(&format!("{b}.ffn_down"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let has_output = file.get_array("output.weight").map_err(|e| e.to_string())?.is_some();
        let model = Model {
            embed: linear("token_embd")?,
            norm: dense("output_norm.weight")?,
            output: if has_output { Some(linear("output")?) } else { None },
            layers,
            hp,
        };
        // Materialise now, so load time is paid at load and not on the first request.
        let mut all: Vec<&Array> = vec![&model.norm];
        for l in &model.layers {
            all.extend([&l.attn_norm, &l.ffn_norm]);
        }
        mlx_rs::transforms::eval(all).map_err(|e| e.to_string())?;
        Ok(model)
    }

    /// Storage format of the attention and output weights, e.g. `q4 (group 32), output q8`.
    pub(crate) fn describe_weights(&self) -> String {
        let attn = self.layers.first().map_or_else(|| "none".into(), |l| l.q.format());
        let out = self.output.as_ref().unwrap_or(&self.embed).format();
        format!("{attn}, output {out}")
    }

    /// Feeds `tokens` after what `cache` holds and returns the logits (f32, one per vocabulary
    /// entry) that follow the last of them, evaluated.
    // x, h, q, k, v, n: the names of the usual transformer notation.
    #[allow(clippy::many_single_char_names)]
    pub(crate) fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Res<Vec<f32>> {
        let hp = &self.hp;
        let n = tokens.len() as i32;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let ids = Array::from_slice(&ids, &[n]);
        let mut x = self.embed.rows(&ids)?.reshape(&[1, n, hp.n_embd])?;
        let offset = cache.len as i32;
        let scale = 1.0 / (hp.head_dim as f32).sqrt();
        let mut next = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let h = fast::rms_norm(&x, Some(&layer.attn_norm), hp.rms_eps)?;
            let heads = |lin: &Linear, count: i32| -> Res<Array> {
                lin.forward(&h)?.reshape(&[1, n, count, hp.head_dim])?.transpose_axes(&[0, 2, 1, 3])
            };
            let q = heads(&layer.q, hp.n_head)?;
            let k = heads(&layer.k, hp.n_head_kv)?;
            let v = heads(&layer.v, hp.n_head_kv)?;
            let q = fast::rope(&q, hp.rope_dims, true, hp.rope_base, 1.0, offset, None)?;
            let k = fast::rope(&k, hp.rope_dims, true, hp.rope_base, 1.0, offset, None)?;
            let (k, v) = match cache.layers.get(i) {
                Some((pk, pv)) => (ops::concatenate(&[pk, &k], 2)?, ops::concatenate(&[pv, &v], 2)?),
                None => (k, v),
            };
            // The causal mask lines queries up with the *last* n keys, so it also holds when
            // this chunk follows cached positions.
            let mask = (n > 1).then_some(ScaledDotProductAttentionMask::Causal);
            let attn = fast::scaled_dot_product_attention(&q, &k, &v, scale, mask, None)?
                .transpose_axes(&[0, 2, 1, 3])?
                .reshape(&[1, n, hp.n_head * hp.head_dim])?;
            x = x.add(layer.o.forward(&attn)?)?;
            let h = fast::rms_norm(&x, Some(&layer.ffn_norm), hp.rms_eps)?;
            let gate = layer.gate.forward(&h)?;
            let silu = gate.multiply(ops::sigmoid(&gate)?)?;
            x = x.add(layer.down.forward(&silu.multiply(layer.up.forward(&h)?)?)?)?;
            next.push((k, v));
        }
        // Only the last position's logits are needed: the vocabulary projection is the largest
        // matmul of the model.
        let last = take_axis(&x, Array::from_slice(&[n - 1], &[1]), 1)?;
        let last = fast::rms_norm(&last, Some(&self.norm), hp.rms_eps)?;
        let logits = self.output.as_ref().unwrap_or(&self.embed).forward(&last)?;
        let logits = logits.reshape(&[-1])?.as_dtype(Dtype::Float32)?;
        let mut outputs: Vec<&Array> = vec![&logits];
        outputs.extend(next.iter().flat_map(|(k, v)| [k, v]));
        mlx_rs::transforms::eval(outputs)?;
        cache.layers = next;
        cache.len += tokens.len();
        Ok(logits.as_slice::<f32>().to_vec())
    }
}

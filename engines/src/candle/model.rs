//! Loading a GGUF into candle's quantized llama model, optionally re-quantized to another
//! weight format first (the engine's variants).
//!
//! Re-quantizing goes through an in-memory GGUF: every 2-D weight is dequantized and quantized
//! to the target format, written with `gguf_file::write`, and read back by
//! `ModelWeights::from_gguf`, so candle's own loader builds the model either way.

use std::io::{Cursor, Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{self, ModelWeights};

use crate::gguf_header::read_header;
use crate::WeightFormat;

/// Positions candle's quantized llama precomputes rotary tables for (a constant there): the
/// longest context this engine can open on a llama-architecture model.
pub(crate) const LLAMA_MAX_POSITIONS: usize = quantized_llama::MAX_SEQ_LEN;

/// The weights and what they were computed from.
pub(crate) struct Loaded {
    pub(crate) weights: ModelWeights,
    pub(crate) n_params: u64,
    /// Format of the big matrices as computed with (e.g. `q4_1` as stored, or `q8_0`).
    pub(crate) compute_dtype: String,
}

fn target_dtype(format: WeightFormat) -> Option<GgmlDType> {
    match format {
        WeightFormat::Gguf => None,
        WeightFormat::Q4_0 => Some(GgmlDType::Q4_0),
        WeightFormat::Q8_0 => Some(GgmlDType::Q8_0),
        WeightFormat::F16 => Some(GgmlDType::F16),
        WeightFormat::F32 => Some(GgmlDType::F32),
    }
}

fn dtype_name(d: GgmlDType) -> String {
    format!("{d:?}").to_ascii_lowercase()
}

/// Loads the model of `path` in `format` (`Content` is not `Clone` and the loader consumes
/// one, so the header is read again here; it takes milliseconds).
pub(crate) fn load(path: &Path, format: WeightFormat) -> Result<Loaded, String> {
    let (content, mut file) = read_header(path)?;
    let file = &mut file;
    let device = Device::Cpu;
    let n_params: u64 = content.tensor_infos.values().map(|t| t.shape.elem_count() as u64).sum();
    let stored =
        content.tensor_infos.get("blk.0.attn_q.weight").map_or_else(|| "unknown".to_owned(), |t| dtype_name(t.ggml_dtype));
    let Some(target) = target_dtype(format) else {
        let weights = ModelWeights::from_gguf(content, file, &device).map_err(|e| e.to_string())?;
        return Ok(Loaded { weights, n_params, compute_dtype: stored });
    };
    let bytes = requantize(&content, file, target)?;
    let mut cursor = Cursor::new(bytes);
    let converted = Content::read(&mut cursor).map_err(|e| format!("re-reading the re-quantized GGUF: {e}"))?;
    let weights = ModelWeights::from_gguf(converted, &mut cursor, &device).map_err(|e| e.to_string())?;
    Ok(Loaded { weights, n_params, compute_dtype: dtype_name(target) })
}

/// Writes an in-memory GGUF whose 2-D weights are in `target` (those whose rows do not split
/// into `target`'s blocks, and 1-D norms, stay as stored).
fn requantize<R: Read + Seek>(content: &Content, reader: &mut R, target: GgmlDType) -> Result<Vec<u8>, String> {
    let device = Device::Cpu;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let qt = content.tensor(reader, name, &device).map_err(|e| format!("reading tensor `{name}`: {e}"))?;
        let dims = qt.shape().dims().to_vec();
        let fits = dims.len() == 2 && dims[1] % target.block_size() == 0;
        let qt = if fits && qt.dtype() != target {
            let t: Tensor = qt.dequantize(&device).map_err(|e| format!("dequantizing `{name}`: {e}"))?;
            QTensor::quantize(&t, target).map_err(|e| format!("quantizing `{name}` to {target:?}: {e}"))?
        } else {
            qt
        };
        tensors.push((name.clone(), qt));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs).map_err(|e| format!("writing the re-quantized GGUF: {e}"))?;
    Ok(out.into_inner())
}

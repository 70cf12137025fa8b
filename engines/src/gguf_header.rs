//! Reading a GGUF's header (metadata and tensor index) with candle-core's reader, for the
//! engines that tokenize from the GGUF themselves (candle, MLX), and the architecture check
//! they share.

use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;

/// Reads the GGUF header of `path`; the file is returned positioned after it.
pub(crate) fn read_header(path: &Path) -> Result<(Content, File), String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let content = Content::read(&mut file).map_err(|e| format!("reading the GGUF header: {e}"))?;
    Ok((content, file))
}

/// The `general.architecture` of `content`, if it is one `engine` builds (llama only).
pub(crate) fn check_architecture(content: &Content, engine: &str) -> Result<String, String> {
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| "missing metadata key `general.architecture`".to_owned())?;
    if arch == "llama" {
        Ok(arch)
    } else {
        Err(format!("architecture `{arch}` is not supported by the {engine} engine (supported: llama); use --engine llama"))
    }
}

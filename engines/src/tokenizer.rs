//! The tokenizer and chat format of a GGUF, built from its own metadata (no hub download), so
//! that the candle and MLX engines prefill exactly the tokens llama.cpp would for the same
//! messages. Shared by both (compiled when either feature is on); the metadata is read with
//! candle-core's GGUF reader, which the `mlx` feature pulls in for that alone.
//!
//! llama.cpp's rules are followed, not candle's `TokenizerFromGguf`: no prefix space (candle's
//! byte-level default adds one, so `<|im_start|>system` became `<|im_start|> system` and the
//! ids drifted from llama.cpp's), the pre-tokenizer chosen by `tokenizer.ggml.pre`, every
//! control/user-defined/unknown token split out of the text before BPE (llama.cpp's
//! `parse_special`), BOS only when `tokenizer.ggml.add_bos_token` says so, and the chat
//! format rendered the way `llama_chat_apply_template` renders the template it detects.
//! Only `gpt2`-type (byte-level BPE) vocabularies are supported; anything else is an error.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::ChatMessage;

/// llama.cpp's token types (`llama_token_type`) in `tokenizer.ggml.token_type`.
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Token texts llama.cpp treats as end of generation besides the declared EOS/EOT ids.
const EOG_TEXTS: [&str; 8] =
    ["<|end_of_turn|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "<|end_of_text|>", "<|eom_id|>"];

/// The chat formats rendered here, each as llama.cpp renders its built-in template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChatFormat {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` … `<|im_start|>assistant\n`.
    ChatMl,
}

impl ChatFormat {
    /// The format a GGUF's Jinja template is detected as (llama.cpp detects by markers too).
    fn detect(template: &str) -> Option<Self> {
        template.contains("<|im_start|>").then_some(ChatFormat::ChatMl)
    }

    fn by_name(name: &str) -> Option<Self> {
        matches!(name.to_ascii_lowercase().as_str(), "chatml").then_some(ChatFormat::ChatMl)
    }

    pub(crate) fn render(self, messages: &[ChatMessage]) -> String {
        match self {
            ChatFormat::ChatMl => {
                let mut s = String::new();
                for m in messages {
                    s.push_str("<|im_start|>");
                    s.push_str(&m.role);
                    s.push('\n');
                    s.push_str(&m.content);
                    s.push_str("<|im_end|>\n");
                }
                s.push_str("<|im_start|>assistant\n");
                s
            }
        }
    }
}

/// Why a GGUF's tokenizer or chat format cannot be used.
#[derive(Debug)]
pub(crate) enum TokenizerError {
    /// A metadata key is missing or has the wrong type.
    Metadata(String),
    /// The vocabulary or pre-tokenizer type is not supported by this engine.
    Unsupported(String),
    /// No chat template in the GGUF and none chosen.
    NoTemplate,
    /// A chat template that is neither detected nor built in.
    Template { name: String, reason: String },
}

/// A GGUF's tokenizer: HF `tokenizers` BPE for encoding, token bytes for decoding and for
/// llguidance's token trie.
pub(crate) struct GgufTokenizer {
    hf: Arc<Tokenizer>,
    bos: Option<u32>,
    eog: Vec<u32>,
    /// Output bytes of each token (empty for control tokens, as llama.cpp's `token_to_piece`
    /// without `special`).
    pieces: Vec<Vec<u8>>,
    info: TokRxInfo,
    /// Token bytes for the trie: control tokens carry toktrie's special marker.
    trie_words: Vec<Vec<u8>>,
    pub(crate) format: ChatFormat,
    /// `gguf` for the GGUF's own template, else the built-in name.
    pub(crate) format_name: String,
}

fn meta<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, TokenizerError> {
    ct.metadata.get(key).ok_or_else(|| TokenizerError::Metadata(format!("missing metadata key `{key}`")))
}

fn meta_str<'a>(ct: &'a Content, key: &str) -> Result<&'a str, TokenizerError> {
    meta(ct, key)?.to_string().map(String::as_str).map_err(|e| TokenizerError::Metadata(format!("`{key}`: {e}")))
}

fn meta_u32(ct: &Content, key: &str) -> Option<u32> {
    ct.metadata.get(key).and_then(|v| v.to_u32().ok().or_else(|| v.to_i32().ok().and_then(|i| u32::try_from(i).ok())))
}

fn meta_strings(ct: &Content, key: &str) -> Result<Vec<String>, TokenizerError> {
    let arr = meta(ct, key)?.to_vec().map_err(|e| TokenizerError::Metadata(format!("`{key}`: {e}")))?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| v.to_string().cloned().map_err(|e| TokenizerError::Metadata(format!("`{key}`[{i}]: {e}"))))
        .collect()
}

/// GPT-2's byte-level alphabet: the printable character each byte is written as in the vocab.
fn byte_level_decoder() -> HashMap<char, u8> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut map = HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0u32..=255 {
        let c = if printable(b) {
            b
        } else {
            shifted += 1;
            255 + shifted
        };
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, b as u8);
        }
    }
    map
}

impl GgufTokenizer {
    /// Builds the tokenizer and picks the chat format (`template` overrides the GGUF's).
    pub(crate) fn from_gguf(ct: &Content, template: Option<&str>) -> Result<Self, TokenizerError> {
        let model = meta_str(ct, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer type `{model}` (the candle engine builds byte-level BPE `gpt2` tokenizers only)"
            )));
        }
        let pre = ct.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map_or("default", String::as_str);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            // llama.cpp: `\p{N}` isolated, then GPT-2's regex.
            "smollm" => Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(),
            "gpt2" | "default" => ByteLevel::new(false, true, true).into(),
            other => {
                return Err(TokenizerError::Unsupported(format!("pre-tokenizer `{other}` (supported: smollm, gpt2, default)")))
            }
        };
        let tokens = meta_strings(ct, "tokenizer.ggml.tokens")?;
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| TokenizerError::Metadata(format!("`tokenizer.ggml.token_type`: {e}")))?
                .iter()
                .map(|t| t.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(TokenizerError::Metadata(format!("{} token types for {} tokens", types.len(), tokens.len())));
        }
        let merges = meta_strings(ct, "tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| TokenizerError::Metadata(format!("`tokenizer.ggml.merges`[{i}] `{m}` has no space")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::Metadata(format!("building BPE: {e}")))?;
        let mut hf = Tokenizer::new(bpe);
        hf.with_pre_tokenizer(Some(pre_tokenizer));
        let is_special = |t: i32| matches!(t, TYPE_UNKNOWN | TYPE_CONTROL | TYPE_USER_DEFINED);
        let specials: Vec<AddedToken> =
            tokens.iter().zip(&types).filter(|(_, &t)| is_special(t)).map(|(s, _)| AddedToken::from(s.clone(), true)).collect();
        hf.add_special_tokens(specials).map_err(|e| TokenizerError::Metadata(format!("special tokens: {e}")))?;

        let decoder = byte_level_decoder();
        let text_bytes = |s: &str| -> Vec<u8> {
            s.chars().map(|c| decoder.get(&c).copied()).collect::<Option<Vec<u8>>>().unwrap_or_else(|| s.as_bytes().to_vec())
        };
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut trie_words = Vec::with_capacity(tokens.len());
        for (s, &t) in tokens.iter().zip(&types) {
            match t {
                TYPE_CONTROL | TYPE_UNKNOWN => {
                    pieces.push(Vec::new());
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(s.as_bytes());
                    trie_words.push(w);
                }
                TYPE_USER_DEFINED => {
                    pieces.push(s.as_bytes().to_vec());
                    trie_words.push(s.as_bytes().to_vec());
                }
                _ => {
                    let b = text_bytes(s);
                    pieces.push(b.clone());
                    trie_words.push(b);
                }
            }
        }

        let n = tokens.len() as u32;
        let in_vocab = |id: Option<u32>| id.filter(|&i| i < n);
        let add_bos = ct.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        let bos_id = in_vocab(meta_u32(ct, "tokenizer.ggml.bos_token_id"));
        let eos_id = in_vocab(meta_u32(ct, "tokenizer.ggml.eos_token_id"));
        let end_of_turn = in_vocab(meta_u32(ct, "tokenizer.ggml.eot_token_id"));
        let mut eog: Vec<u32> =
            [eos_id, end_of_turn, in_vocab(meta_u32(ct, "tokenizer.ggml.eom_token_id"))].into_iter().flatten().collect();
        for (i, (s, &t)) in tokens.iter().zip(&types).enumerate() {
            if t == TYPE_CONTROL && EOG_TEXTS.contains(&s.as_str()) {
                eog.push(i as u32);
            }
        }
        eog.sort_unstable();
        eog.dedup();
        let Some(&first_eog) = eog.first() else {
            return Err(TokenizerError::Metadata("no end-of-generation token (`tokenizer.ggml.eos_token_id`)".into()));
        };
        let mut info = TokRxInfo::new(n, eos_id.unwrap_or(first_eog));
        info.tok_bos = bos_id;
        info.tok_end_of_turn = end_of_turn.or_else(|| tokens.iter().position(|t| t == "<|im_end|>").map(|i| i as u32));

        let (format, format_name) = if let Some(name) = template {
            (
                ChatFormat::by_name(name).ok_or_else(|| TokenizerError::Template {
                    name: name.into(),
                    reason: "the candle engine renders `chatml` only".into(),
                })?,
                name.to_owned(),
            )
        } else {
            let jinja = ct.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok());
            let Some(jinja) = jinja else { return Err(TokenizerError::NoTemplate) };
            let format = ChatFormat::detect(jinja).ok_or_else(|| TokenizerError::Template {
                name: "gguf".into(),
                reason: "the GGUF's chat template is not one the candle engine renders (chatml); \
                             choose one with --chat-template"
                    .into(),
            })?;
            (format, "gguf".to_owned())
        };
        Ok(Self {
            hf: Arc::new(hf),
            bos: if add_bos { bos_id } else { None },
            eog,
            pieces,
            info,
            trie_words,
            format,
            format_name,
        })
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The prompt text for `messages` (with the assistant turn opened).
    pub(crate) fn render(&self, messages: &[ChatMessage]) -> String {
        self.format.render(messages)
    }

    /// Token ids of `text`, special tokens parsed, BOS added when the GGUF asks for it.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.hf.encode_fast(text, false).map_err(|e| e.to_string())?;
        let mut ids = Vec::with_capacity(enc.get_ids().len() + 1);
        ids.extend(self.bos);
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The bytes token `id` adds to the output (empty for control tokens).
    pub(crate) fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// llguidance's token environment for this vocabulary (`n_vocab` = the model's logits).
    pub(crate) fn tok_env(&self, n_vocab: usize) -> TokEnv {
        let mut info = self.info;
        let mut words = self.trie_words.clone();
        while words.len() < n_vocab {
            let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            w.extend_from_slice(format!("<[{}]>", words.len()).as_bytes());
            words.push(w);
        }
        info.vocab_size = words.len() as u32;
        Arc::new(GgufTokEnv { trie: TokTrie::from(&info, &words), hf: Arc::clone(&self.hf) })
    }
}

/// [`TokenizerEnv`] over the GGUF tokenizer: llguidance tokenizes forced text with it.
struct GgufTokEnv {
    trie: TokTrie,
    hf: Arc<Tokenizer>,
}

impl TokenizerEnv for GgufTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) => match self.hf.encode_fast(text, false) {
                Ok(enc) => enc.get_ids().to_vec(),
                Err(_) => self.trie.greedy_tokenize(s),
            },
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_is_a_bijection() {
        let map = byte_level_decoder();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
        assert_eq!(map[&'a'], b'a');
        let mut bytes: Vec<u8> = map.values().copied().collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
    }

    #[test]
    fn chatml_matches_llama_cpp_layout() {
        let text = ChatFormat::ChatMl.render(&[ChatMessage::system("S"), ChatMessage::user("U")]);
        assert_eq!(text, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(ChatFormat::detect("{{'<|im_start|>' + role}}"), Some(ChatFormat::ChatMl));
        assert_eq!(ChatFormat::detect("<start_of_turn>"), None);
        assert_eq!(ChatFormat::by_name("ChatML"), Some(ChatFormat::ChatMl));
    }
}

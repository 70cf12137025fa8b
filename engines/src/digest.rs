//! SHA-256 helpers every crate of the workspace shares: hex digests and the fingerprint of a
//! model file (SHA-256 of its first MiB, and its size). The lowest module, with no state.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 (hex) of the first MiB of the file at `path`, and the file's size: what identifies a
/// model file cheaply (a moved or renamed file keeps it).
///
/// # Errors
/// The file cannot be opened or read.
pub fn file_head_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut head = Vec::with_capacity(1 << 20);
    file.take(1 << 20).read_to_end(&mut head)?;
    Ok((sha256_hex(&head), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    #[test]
    fn file_head_covers_the_first_mib_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut bytes = vec![7u8; (1 << 20) + 10];
        std::fs::write(&a, &bytes).unwrap();
        *bytes.last_mut().unwrap() = 8;
        std::fs::write(&b, &bytes).unwrap();
        let (sa, na) = file_head_sha256(&a).unwrap();
        let (sb, nb) = file_head_sha256(&b).unwrap();
        assert_eq!((sa, na), (sb, nb));
        assert_eq!(na, (1 << 20) + 10);
        assert!(file_head_sha256(&dir.path().join("missing")).is_err());
    }
}

//! The prefix cache's store: opaque KV-state blobs by key, least recently used first out.
//!
//! States live in memory up to a byte budget; the least recently used ones spill to a directory
//! (one file per key, written to a temp name and renamed) up to a second budget, beyond which
//! the oldest files are deleted. A file is checked on read (magic, key, length, CRC-32), so a
//! torn or foreign file is a miss and is removed, never fed to the engine. Files left by an
//! earlier process are found at start-up and count against the disk budget.
//!
//! Backends compute the key (exact prefix tokens + model + configuration) and the blobs; this
//! module knows nothing about models.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::{CacheTier, PrefixCacheConfig};

const MAGIC: &[u8; 8] = b"PLKVST01";
const HEADER: usize = 8 + 32 + 8 + 8 + 4;
const SUFFIX: &str = "kv";

/// Identifies one cached prefix: SHA-256 over the backend's identity and the prefix tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// Hashes `identity` (model, backend, configuration) and the exact prefix tokens.
    pub fn new(identity: &str, tokens: &[i32]) -> Self {
        let mut h = Sha256::new();
        h.update((identity.len() as u64).to_le_bytes());
        h.update(identity.as_bytes());
        h.update((tokens.len() as u64).to_le_bytes());
        for t in tokens {
            h.update(t.to_le_bytes());
        }
        Key(h.finalize().into())
    }

    fn hex(&self) -> String {
        crate::digest::hex(&self.0)
    }
}

struct Entry {
    state: Arc<Vec<u8>>,
    tokens: usize,
    used: u64,
}

struct DiskEntry {
    bytes: u64,
    used: u64,
}

/// Running totals, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub memory_entries: usize,
    pub memory_bytes: u64,
    pub disk_entries: usize,
    pub disk_bytes: u64,
    pub hits_memory: u64,
    pub hits_disk: u64,
    pub misses: u64,
    pub spilled: u64,
    pub deleted: u64,
}

/// A hit: the state and how many tokens it covers.
pub struct Hit {
    pub state: Arc<Vec<u8>>,
    pub tokens: usize,
    pub tier: CacheTier,
}

/// In-memory LRU with an LRU spill directory.
pub struct PrefixStore {
    cfg: PrefixCacheConfig,
    mem: HashMap<Key, Entry>,
    disk: HashMap<Key, DiskEntry>,
    clock: u64,
    stats: StoreStats,
}

impl PrefixStore {
    /// Opens the store; indexes (and trims to budget) the spill directory when there is one.
    ///
    /// # Errors
    /// The spill directory cannot be created or read.
    pub fn open(cfg: PrefixCacheConfig) -> std::io::Result<Self> {
        let mut store = Self { cfg, mem: HashMap::new(), disk: HashMap::new(), clock: 0, stats: StoreStats::default() };
        if let Some(dir) = store.cfg.disk_dir.clone() {
            fs::create_dir_all(&dir)?;
            let mut found = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some(SUFFIX) {
                    continue;
                }
                let Some(key) = path.file_stem().and_then(|s| s.to_str()).and_then(parse_hex) else { continue };
                let meta = entry.metadata()?;
                let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).map_or(0, |d| d.as_secs());
                found.push((key, meta.len(), age));
            }
            // Oldest first gets the lowest clock, so it goes first when over budget.
            found.sort_by_key(|f| std::cmp::Reverse(f.2));
            for (key, bytes, _) in found {
                store.clock += 1;
                store.disk.insert(key, DiskEntry { bytes, used: store.clock });
                store.stats.disk_bytes += bytes;
            }
            store.stats.disk_entries = store.disk.len();
            store.trim_disk(0);
        }
        Ok(store)
    }

    pub fn config(&self) -> &PrefixCacheConfig {
        &self.cfg
    }

    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The state stored under `key`, from memory or disk (a disk hit moves back to memory).
    pub fn get(&mut self, key: &Key) -> Option<Hit> {
        let now = self.tick();
        if let Some(e) = self.mem.get_mut(key) {
            e.used = now;
            self.stats.hits_memory += 1;
            return Some(Hit { state: Arc::clone(&e.state), tokens: e.tokens, tier: CacheTier::Memory });
        }
        if !self.disk.contains_key(key) {
            self.stats.misses += 1;
            return None;
        }
        let path = self.path(key)?;
        match read_file(&path, key) {
            Ok((tokens, state)) => {
                self.stats.hits_disk += 1;
                let state = Arc::new(state);
                self.insert_memory(*key, Arc::clone(&state), tokens);
                Some(Hit { state, tokens, tier: CacheTier::Disk })
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "prefix cache: unreadable spill file removed");
                self.remove_disk(key);
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Stores `state` (covering `tokens` prompt tokens) under `key`.
    pub fn put(&mut self, key: Key, state: Vec<u8>, tokens: usize) {
        self.insert_memory(key, Arc::new(state), tokens);
    }

    fn insert_memory(&mut self, key: Key, state: Arc<Vec<u8>>, tokens: usize) {
        let size = state.len() as u64;
        if let Some(old) = self.mem.remove(&key) {
            self.stats.memory_bytes -= old.state.len() as u64;
        }
        if size > self.cfg.memory_bytes {
            // Larger than the whole memory budget: straight to disk.
            self.spill(key, &state, tokens);
            self.sync_counts();
            return;
        }
        while self.stats.memory_bytes + size > self.cfg.memory_bytes {
            let Some(victim) = self.mem.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k) else { break };
            if let Some(e) = self.mem.remove(&victim) {
                self.stats.memory_bytes -= e.state.len() as u64;
                if !self.disk.contains_key(&victim) {
                    self.spill(victim, &e.state, e.tokens);
                }
            }
        }
        let used = self.tick();
        self.stats.memory_bytes += size;
        self.mem.insert(key, Entry { state, tokens, used });
        self.sync_counts();
    }

    fn sync_counts(&mut self) {
        self.stats.memory_entries = self.mem.len();
        self.stats.disk_entries = self.disk.len();
    }

    fn path(&self, key: &Key) -> Option<PathBuf> {
        self.cfg.disk_dir.as_ref().map(|d| d.join(format!("{}.{SUFFIX}", key.hex())))
    }

    /// Writes one state to the spill directory, deleting the oldest files to stay in budget.
    fn spill(&mut self, key: Key, state: &[u8], tokens: usize) {
        let Some(path) = self.path(&key) else { return };
        let size = (state.len() + HEADER) as u64;
        if size > self.cfg.disk_bytes {
            return;
        }
        self.trim_disk(size);
        match write_file(&path, &key, tokens, state) {
            Ok(()) => {
                let used = self.tick();
                if let Some(old) = self.disk.insert(key, DiskEntry { bytes: size, used }) {
                    self.stats.disk_bytes -= old.bytes;
                }
                self.stats.disk_bytes += size;
                self.stats.spilled += 1;
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "prefix cache: cannot spill state to disk"),
        }
    }

    /// Deletes least recently used files until `incoming` more bytes fit the disk budget.
    fn trim_disk(&mut self, incoming: u64) {
        while self.stats.disk_bytes + incoming > self.cfg.disk_bytes {
            let Some(victim) = self.disk.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k) else { break };
            self.remove_disk(&victim);
            self.stats.deleted += 1;
        }
        self.sync_counts();
    }

    fn remove_disk(&mut self, key: &Key) {
        if let Some(e) = self.disk.remove(key) {
            self.stats.disk_bytes -= e.bytes;
            if let Some(path) = self.path(key) {
                let _ = fs::remove_file(path);
            }
        }
        self.sync_counts();
    }
}

impl Drop for PrefixStore {
    /// Writes the states held only in memory to the spill directory (least recently used
    /// first, so the newest survive the disk budget), for the next process: a resumed run or
    /// the next `eval`.
    fn drop(&mut self) {
        if self.cfg.disk_dir.is_none() {
            return;
        }
        let mut keep: Vec<(Key, u64)> =
            self.mem.iter().filter(|(k, _)| !self.disk.contains_key(*k)).map(|(k, e)| (*k, e.used)).collect();
        keep.sort_by_key(|k| k.1);
        for (key, _) in keep {
            if let Some(e) = self.mem.remove(&key) {
                self.spill(key, &e.state, e.tokens);
            }
        }
    }
}

fn parse_hex(s: &str) -> Option<Key> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Key(out))
}

fn write_file(path: &Path, key: &Key, tokens: usize, state: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::io::BufWriter::new(fs::File::create(&tmp)?);
    f.write_all(MAGIC)?;
    f.write_all(&key.0)?;
    f.write_all(&(tokens as u64).to_le_bytes())?;
    f.write_all(&(state.len() as u64).to_le_bytes())?;
    f.write_all(&crc32fast::hash(state).to_le_bytes())?;
    f.write_all(state)?;
    f.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    fs::rename(&tmp, path)
}

fn read_file(path: &Path, key: &Key) -> std::io::Result<(usize, Vec<u8>)> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut f = fs::File::open(path)?;
    let mut head = [0u8; HEADER];
    f.read_exact(&mut head)?;
    if &head[..8] != MAGIC || head[8..40] != key.0 {
        return Err(bad("not a prefix-cache file for this key"));
    }
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(head[r].try_into().unwrap_or_default());
    let tokens = word(40..48) as usize;
    let len = word(48..56) as usize;
    let crc = u32::from_le_bytes(head[56..60].try_into().unwrap_or_default());
    if f.metadata()?.len() != (HEADER + len) as u64 {
        return Err(bad("length does not match the header (torn write?)"));
    }
    let mut state = vec![0u8; len];
    f.read_exact(&mut state)?;
    if crc32fast::hash(&state) != crc {
        return Err(bad("checksum mismatch"));
    }
    Ok((tokens, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mem: u64, dir: Option<&Path>, disk: u64) -> PrefixCacheConfig {
        PrefixCacheConfig { memory_bytes: mem, disk_dir: dir.map(Path::to_path_buf), disk_bytes: disk, min_tokens: 1 }
    }

    fn dir_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
    }

    #[test]
    fn key_depends_on_every_token_and_the_identity() {
        let a = Key::new("m", &[1, 2, 3]);
        assert_eq!(a, Key::new("m", &[1, 2, 3]));
        assert_ne!(a, Key::new("m", &[1, 2, 4]));
        assert_ne!(a, Key::new("m", &[1, 2]));
        assert_ne!(a, Key::new("n", &[1, 2, 3]));
        assert_eq!(parse_hex(&a.hex()), Some(a));
    }

    #[test]
    fn memory_only_evicts_least_recently_used() {
        let mut s = PrefixStore::open(cfg(250, None, 0)).unwrap();
        let (a, b, c) = (Key::new("m", &[1]), Key::new("m", &[2]), Key::new("m", &[3]));
        s.put(a, vec![1; 100], 1);
        s.put(b, vec![2; 100], 1);
        assert!(s.get(&a).is_some()); // a is now newer than b
        s.put(c, vec![3; 100], 1);
        assert!(s.get(&b).is_none(), "b was least recently used");
        assert_eq!(s.get(&a).unwrap().state[0], 1);
        assert_eq!(s.get(&c).unwrap().tier, CacheTier::Memory);
        assert!(s.stats().memory_bytes <= 250);
    }

    #[test]
    fn spill_round_trips_and_stays_within_the_disk_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let budget = 3 * (1000 + HEADER as u64);
        let mut s = PrefixStore::open(cfg(1500, Some(tmp.path()), budget)).unwrap();
        let keys: Vec<Key> = (0..8).map(|i| Key::new("m", &[i])).collect();
        for (i, k) in keys.iter().enumerate() {
            s.put(*k, vec![i as u8; 1000], 10 + i);
            assert!(dir_bytes(tmp.path()) <= budget, "spill dir over budget after {i}");
            assert!(s.stats().memory_bytes <= 1500);
        }
        // The newest is in memory, the three before it on disk, the older ones gone.
        assert_eq!(s.get(&keys[7]).unwrap().tier, CacheTier::Memory);
        let hit = s.get(&keys[5]).unwrap();
        assert_eq!((hit.tier, hit.tokens, hit.state[0]), (CacheTier::Disk, 15, 5));
        assert!(s.get(&keys[0]).is_none());
        assert!(dir_bytes(tmp.path()) <= budget);
        assert!(s.stats().deleted > 0);

        // A new process finds the files (the newest one written at drop) and honours a
        // smaller budget.
        drop(s);
        let small = 1000 + HEADER as u64;
        let s2 = PrefixStore::open(cfg(1500, Some(tmp.path()), small)).unwrap();
        assert!(s2.stats().disk_entries <= 1);
        assert!(dir_bytes(tmp.path()) <= small);
    }

    #[test]
    fn a_corrupt_spill_file_is_a_miss_and_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = PrefixStore::open(cfg(10, Some(tmp.path()), 1 << 20)).unwrap();
        let k = Key::new("m", &[9]);
        s.put(k, vec![7; 100], 3); // over the memory budget: straight to disk
        let path = s.path(&k).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert!(s.get(&k).is_none());
        assert!(!path.exists());
    }

    #[test]
    fn states_in_memory_are_written_out_for_the_next_process() {
        let tmp = tempfile::tempdir().unwrap();
        let k = Key::new("m", &[1, 2]);
        {
            let mut s = PrefixStore::open(cfg(1 << 20, Some(tmp.path()), 1 << 20)).unwrap();
            s.put(k, vec![5; 64], 2);
            assert_eq!(dir_bytes(tmp.path()), 0, "nothing spilled while in budget");
        }
        let mut s = PrefixStore::open(cfg(1 << 20, Some(tmp.path()), 1 << 20)).unwrap();
        let hit = s.get(&k).expect("found on disk");
        assert_eq!((hit.tier, hit.tokens, hit.state.len()), (CacheTier::Disk, 2, 64));
    }
}

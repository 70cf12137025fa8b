//! A small seeded random stream (SplitMix64): enough for sampling tokens, drawing demo subsets
//! and bootstrap resamples reproducibly, without a dependency, and the one such stream of the
//! workspace (the harness uses it too). Not for anything security-related.

/// `SplitMix64` (Steele, Lea, Flood 2014): a 64-bit state advanced by a constant, then mixed.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A stream for one purpose of one iteration: the run's seed, a stream label and an index
    /// mixed together, so that streams do not overlap in practice.
    pub fn derive(seed: u64, stream: &str, index: u64) -> Self {
        let mut h = Self::new(seed ^ 0x5851_f42d_4c95_7f2d);
        let mut acc = h.next_u64();
        for b in stream.bytes() {
            acc = Self::new(acc ^ u64::from(b)).next_u64();
        }
        Self::new(acc ^ Self::new(index).next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0), by rejection so that no value is favoured.
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }

    /// `k` distinct indices of `0..n` (all of them when `k >= n`), in draw order.
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut pool: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below(n - i);
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = SplitMix64::derive(7, "demos", 1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = SplitMix64::derive(7, "demos", 1);
                move |_| r.next_u64()
            })
            .collect();
        let c = SplitMix64::derive(7, "demos", 2).next_u64();
        assert_eq!(a, b);
        assert_ne!(a[0], c);
    }

    #[test]
    fn sample_indices_are_distinct_and_in_range() {
        let mut r = SplitMix64::new(3);
        for n in 0..10 {
            for k in 0..12 {
                let mut s = r.sample_indices(n, k);
                assert_eq!(s.len(), k.min(n));
                s.sort_unstable();
                s.dedup();
                assert_eq!(s.len(), k.min(n));
                assert!(s.iter().all(|&i| i < n));
            }
        }
    }
}

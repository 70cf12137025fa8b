//! Process memory measurement: current and peak resident set size.
//!
//! On Linux the kernel keeps a high-water mark (`VmHWM` in `/proc/self/status`) that can be
//! reset by writing `5` to `/proc/self/clear_refs`, which gives an honest per-batch peak.
//! Elsewhere we fall back to sysinfo's current RSS sampled at the end of the batch.

/// Measures the peak RSS over a span of work.
#[derive(Debug)]
pub struct PeakWatch {
    start_rss: u64,
    kernel_peak: bool,
}

impl PeakWatch {
    /// Starts a span: resets the kernel's high-water mark where possible.
    pub fn start() -> Self {
        let kernel_peak = reset_peak();
        Self { start_rss: current_rss(), kernel_peak }
    }

    /// Peak RSS in bytes since [`PeakWatch::start`] (at least the current RSS).
    pub fn peak(&self) -> u64 {
        let now = current_rss();
        let hwm = if self.kernel_peak { proc_status_kib("VmHWM:").map_or(0, |k| k * 1024) } else { 0 };
        hwm.max(now).max(self.start_rss)
    }
}

/// Current resident set size of this process in bytes (0 if unknown).
pub fn current_rss() -> u64 {
    if let Some(kib) = proc_status_kib("VmRSS:") {
        return kib * 1024;
    }
    let pid = sysinfo::Pid::from_u32(std::process::id());
    let mut sys = sysinfo::System::new();
    sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
    sys.process(pid).map_or(0, sysinfo::Process::memory)
}

/// Current resident set size of another process in bytes (`None` once it is gone).
pub fn process_rss(pid: u32) -> Option<u64> {
    if cfg!(target_os = "linux") {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        return status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024);
    }
    let pid = sysinfo::Pid::from_u32(pid);
    let mut sys = sysinfo::System::new();
    sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
    sys.process(pid).map(sysinfo::Process::memory)
}

/// What machine this is: CPU brand, logical cores, total memory (for calibration tables).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub total_memory_bytes: u64,
}

impl Machine {
    pub fn current() -> Self {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        let cpu = sys.cpus().first().map(|c| c.brand().trim().to_owned()).unwrap_or_default();
        Machine { cpu, cores: sys.cpus().len().max(1), total_memory_bytes: sys.total_memory() }
    }
}

/// Peak resident set size of this process since start (or the last reset), in bytes.
pub fn peak_rss() -> u64 {
    proc_status_kib("VmHWM:").map_or_else(current_rss, |k| k * 1024)
}

fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)).and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_covers_an_allocation() {
        let watch = PeakWatch::start();
        let before = current_rss();
        assert!(before > 0, "RSS must be readable on this platform");
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        drop(big);
        let peak = watch.peak();
        assert!(peak >= before + (48 << 20), "peak {peak} should include the 64 MiB buffer (before {before})");
    }
}

//! The machine a benchmark ran on, recorded with its figures so that figures from different
//! machines can be compared honestly: its cores, CPU, memory and kernel, and what a small synced
//! append costs on its disk, measured just before the load (the figure that bounds a synced
//! write's latency; CPU bounds the throughput).

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// How many synced appends the probe times.
const PROBES: usize = 200;

#[derive(Debug, Serialize)]
pub(super) struct Machine {
    /// Cores this process may run on.
    pub cores: usize,
    /// `model name` in /proc/cpuinfo, where there is one.
    pub cpu: Option<String>,
    /// `MemTotal` in /proc/meminfo.
    pub memory_gib: Option<f64>,
    /// The kernel release.
    pub kernel: Option<String>,
    /// Where the synced appends were timed (the benchmark's data, or --fsync-probe-dir).
    pub fdatasync_dir: String,
    /// `fdatasync` of a 256-byte append, median and 99th percentile over 200, in microseconds.
    pub fdatasync_p50_us: f64,
    pub fdatasync_p99_us: f64,
}

impl Machine {
    /// Describe this machine and time synced appends to a temporary file in `dir`.
    pub(super) fn measure(dir: &Path) -> Result<Machine, String> {
        let mut file = tempfile::Builder::new()
            .prefix("raftor-fdatasync-probe-")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot time fdatasync in {}: {e}", dir.display()))?;
        let record = [b'x'; 256];
        let mut micros = Vec::with_capacity(PROBES);
        for _ in 0..PROBES {
            let started = Instant::now();
            file.write_all(&record)
                .and_then(|()| file.as_file().sync_data())
                .map_err(|e| format!("cannot time fdatasync in {}: {e}", dir.display()))?;
            micros.push(started.elapsed().as_secs_f64() * 1e6);
        }
        micros.sort_by(f64::total_cmp);
        let at = |quantile: f64| micros[((PROBES - 1) as f64 * quantile).round() as usize];
        Ok(Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu: first_value("/proc/cpuinfo", "model name"),
            memory_gib: first_value("/proc/meminfo", "MemTotal").and_then(|text| {
                let kib: f64 = text.split_whitespace().next()?.parse().ok()?;
                Some((kib / 1024.0 / 1024.0 * 10.0).round() / 10.0)
            }),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|text| text.trim().to_owned()),
            fdatasync_dir: dir.display().to_string(),
            fdatasync_p50_us: (at(0.5) * 10.0).round() / 10.0,
            fdatasync_p99_us: (at(0.99) * 10.0).round() / 10.0,
        })
    }

    /// One line for the human-readable report.
    pub(super) fn describe(&self) -> String {
        format!(
            "  machine     {} cores{}{}, fdatasync of a small append p50 {:.0} µs, p99 {:.0} µs ({})",
            self.cores,
            self.cpu
                .as_ref()
                .map_or(String::new(), |cpu| format!(" ({cpu})")),
            self.memory_gib
                .map_or(String::new(), |gib| format!(", {gib} GiB")),
            self.fdatasync_p50_us,
            self.fdatasync_p99_us,
            self.fdatasync_dir
        )
    }
}

/// The value of the first `name: value` line of a /proc file.
fn first_value(path: &str, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_described_and_its_disk_timed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let machine = Machine::measure(dir.path()).expect("measured");
        assert!(machine.cores >= 1);
        assert!(machine.fdatasync_p50_us > 0.0);
        assert!(machine.fdatasync_p99_us >= machine.fdatasync_p50_us);
        assert!(machine.describe().contains("cores"));
        assert!(
            std::fs::read_dir(dir.path())
                .expect("listed")
                .next()
                .is_none(),
            "the probe file is removed"
        );
        let missing = Machine::measure(&dir.path().join("absent"));
        assert!(missing
            .expect_err("refused")
            .contains("cannot time fdatasync"));
    }
}

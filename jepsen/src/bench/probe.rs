//! What the benchmarks read off the machine and the servers: a process's CPU
//! time and resident memory, loopback traffic, directory sizes, a baton
//! node's Prometheus gauges, and latency histograms.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces, so the split is at the last `)`).
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect()
}

/// User plus system CPU time of a process so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let f = stat_fields(pid);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / TICKS_PER_S
}

/// Resident memory of a process (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes received on the loopback interface so far: every byte between
/// clients and servers and among servers, counted once.
pub fn loopback_bytes() -> u64 {
    std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Total size of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// The value of gauge `name` on a baton node's `/metrics`, if it answers.
pub async fn baton_metric(http: SocketAddr, name: &str) -> Option<f64> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(http).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        body.lines().find_map(|l| {
            let (metric, value) = l.split_once(' ')?;
            (metric == name).then(|| value.trim().parse().ok())?
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// Latencies in microseconds, 1 µs to 10 min, 3 significant digits.
pub struct Latencies(Option<Histogram<u64>>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).ok())
    }
}

/// p50, p99 and max of a run, in milliseconds.
#[derive(Serialize, Clone, Copy, Debug, Default)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        if let Some(h) = &mut self.0 {
            h.saturating_record(us);
        }
    }

    pub fn add(&mut self, other: &Latencies) {
        if let (Some(h), Some(o)) = (&mut self.0, &other.0) {
            let _ = h.add(o);
        }
    }

    pub fn summary(&self) -> Summary {
        let ms = |us: u64| us as f64 / 1000.0;
        self.0.as_ref().map_or_else(Summary::default, |h| Summary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me) > 0, "a running process has resident memory");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {}
        assert!(cpu_seconds(me) > 0.0, "spinning costs CPU time");
    }

    #[test]
    fn latency_summary() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
    }
}

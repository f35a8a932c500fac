//! The report's plots: client latency and throughput over time, with the
//! fault intervals as coloured bands. Plain SVG written directly: two
//! scatter/line panels need no plotting library or fonts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::history::{pairs, Kind, Op};

const W: f64 = 1000.0;
const H: f64 = 260.0;
const LEFT: f64 = 60.0;
const TOP: f64 = 20.0;

fn fault_colour(f: &str) -> &'static str {
    match f {
        "kill" => "#f4a3a3",
        "pause" => "#f7d794",
        "partition" => "#a3c4f4",
        "delay" => "#c9a3f4",
        "freeze" => "#f2a65a",
        "silent" => "#a0a0a0",
        _ => "#b8e0b0",
    }
}

/// (start s, end s, fault) from the nemesis operations.
fn fault_bands(ops: &[Op]) -> Vec<(f64, f64, String)> {
    let mut bands = Vec::new();
    let mut open: Option<(f64, String)> = None;
    for op in ops.iter().filter(|o| o.process == "nemesis") {
        let t = secs(op.time);
        match op.f.as_str() {
            "heal" | "heal-failed" => {
                if let Some((s, f)) = open.take() {
                    bands.push((s, t, f));
                }
            }
            "fault-failed" => {}
            f => open = Some((t, f.to_string())),
        }
    }
    if let Some((s, f)) = open {
        let end = ops.last().map_or(s, |o| secs(o.time));
        bands.push((s, end, f));
    }
    bands
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Writes `latency.svg` into `dir`.
pub fn plots(dir: &Path, ops: &[Op]) -> anyhow::Result<()> {
    let end = ops.last().map_or(1.0, |o| secs(o.time)).max(1.0);
    let calls: Vec<(f64, f64, Kind, &str)> = pairs(ops, |o| {
        matches!(o.f.as_str(), "read" | "cas" | "put" | "check") && o.process != "final"
    })
    .into_iter()
    .filter_map(|p| {
        let c = p.complete?;
        Some((
            secs(p.invoke.time),
            (c.time.saturating_sub(p.invoke.time)) as f64 / 1e6,
            c.kind,
            p.invoke.f.as_str(),
        ))
    })
    .collect();
    let max_ms = calls
        .iter()
        .map(|c| c.1)
        .fold(10.0_f64, f64::max)
        .min(5000.0);
    let x = |t: f64| LEFT + t / end * (W - LEFT - 20.0);
    // Latency on a log scale: 0.1 ms .. max.
    let y_lat = |ms: f64| {
        let lo = 0.1_f64.ln();
        let hi = max_ms.ln();
        TOP + H - ((ms.max(0.1).ln() - lo) / (hi - lo)).clamp(0.0, 1.0) * H
    };
    // Every second of the run, so a second with nothing done shows as 0.
    let mut per_second: BTreeMap<u64, usize> = (0..end as u64).map(|s| (s, 0)).collect();
    for c in calls.iter().filter(|c| c.2 == Kind::Ok) {
        *per_second.entry(c.0 as u64).or_default() += 1;
    }
    let max_rate = per_second.values().copied().max().unwrap_or(1).max(1) as f64;
    let top2 = TOP * 3.0 + H;
    let y_rate = |r: f64| top2 + H - r / max_rate * H;

    let mut svg = String::new();
    let total_h = top2 + H + 40.0;
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" font-family="sans-serif" font-size="11">"#
    )?;
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
    for top in [TOP, top2] {
        for (s, e, f) in fault_bands(ops) {
            writeln!(
                svg,
                r#"<rect x="{:.1}" y="{top}" width="{:.1}" height="{H}" fill="{}" opacity="0.5"><title>{f}</title></rect>"#,
                x(s),
                (x(e) - x(s)).max(1.0),
                fault_colour(&f)
            )?;
        }
        writeln!(
            svg,
            r#"<rect x="{LEFT}" y="{top}" width="{}" height="{H}" fill="none" stroke="black"/>"#,
            W - LEFT - 20.0
        )?;
    }
    for (t, ms, kind, f) in &calls {
        let colour = match (kind, *f) {
            (Kind::Ok, "cas") => "#1f77b4",
            (Kind::Ok, "read") => "#2ca02c",
            (Kind::Ok, _) => "#7f7f7f",
            (Kind::Fail, _) => "#ff7f0e",
            _ => "#d62728",
        };
        writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="{colour}"/>"#,
            x(*t),
            y_lat(*ms)
        )?;
    }
    let points: Vec<String> = per_second
        .iter()
        .map(|(s, n)| format!("{:.1},{:.1}", x(*s as f64 + 0.5), y_rate(*n as f64)))
        .collect();
    writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4"/>"##,
        points.join(" ")
    )?;
    for ms in [1.0, 10.0, 100.0, 1000.0] {
        if ms <= max_ms {
            writeln!(
                svg,
                r#"<text x="4" y="{:.1}">{ms} ms</text>"#,
                y_lat(ms) + 4.0
            )?;
        }
    }
    writeln!(
        svg,
        r#"<text x="4" y="{:.1}">{max_rate}/s</text>"#,
        top2 + 10.0
    )?;
    writeln!(svg, r#"<text x="4" y="{:.1}">0/s</text>"#, top2 + H)?;
    let label_y = top2 + H + 16.0;
    let mut t = 0.0;
    while t <= end {
        writeln!(
            svg,
            r#"<text x="{:.1}" y="{label_y}">{t:.0}s</text>"#,
            x(t) - 8.0
        )?;
        t += (end / 10.0).ceil().max(1.0);
    }
    writeln!(
        svg,
        r#"<text x="{LEFT}" y="{:.1}">latency of register, tombstone calls (log; blue cas, green read, grey put/check ok, orange fail, red unknown) and ok calls per second; bands: faults (red kill, yellow pause, orange freeze, grey silent, blue partition, purple delay, green membership)</text>"#,
        total_h - 6.0
    )?;
    writeln!(svg, "</svg>")?;
    std::fs::write(dir.join("latency.svg"), svg)?;
    Ok(())
}

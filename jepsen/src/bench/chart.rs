//! Bar charts of benchmark figures, baton next to etcd per load level, as
//! plain SVG (no plotting library or fonts needed).

use std::fmt::Write as _;

const W: f64 = 460.0;
const H: f64 = 260.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 30.0;
const BATON: &str = "#2b7bb9";
const ETCD: &str = "#9aa5b1";

/// One panel: `title`, a bar pair per group (`label`, baton, etcd), the
/// y-axis unit.
fn panel(
    out: &mut String,
    x0: f64,
    title: &str,
    unit: &str,
    groups: &[(String, f64, Option<f64>)],
) {
    let max = groups
        .iter()
        .flat_map(|(_, b, e)| [Some(*b), *e])
        .flatten()
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let plot_h = H - TOP - BOTTOM;
    let plot_w = W - LEFT - 20.0;
    let slot = plot_w / groups.len().max(1) as f64;
    let bar = slot / 3.0;
    let y = |v: f64| TOP + plot_h * (1.0 - v / max);
    let _ = write!(
        out,
        r#"<text x="{:.0}" y="18" font-size="13" font-weight="bold">{title}</text>"#,
        x0 + LEFT
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{:.0}" x2="{:.0}" y1="{:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{:.0}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            x0 + LEFT,
            x0 + LEFT + plot_w,
            y(v),
            y(v),
            x0 + LEFT - 4.0,
            y(v) + 3.0,
            human(v)
        );
    }
    for (i, (label, b, e)) in groups.iter().enumerate() {
        let x = x0 + LEFT + slot * i as f64 + bar / 2.0;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="{BATON}"/>"#,
            y(*b),
            TOP + plot_h - y(*b)
        );
        if let Some(e) = e {
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="{ETCD}"/>"#,
                x + bar,
                y(*e),
                TOP + plot_h - y(*e)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.0}" font-size="11" text-anchor="middle">{label}</text>"#,
            x + bar,
            H - BOTTOM + 15.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.0}" y="{:.0}" font-size="10">{unit}</text>"#,
        x0 + LEFT,
        H - 8.0
    );
}

fn human(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Two panels side by side: throughput and p99 latency per client count.
pub fn writes(rows: &[super::Row]) -> String {
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif">"#,
        2.0 * W,
        H + 20.0
    );
    let label = |r: &super::Row| format!("{} clients", r.clients);
    let throughput: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                label(r),
                r.baton.ops_per_s,
                r.etcd.as_ref().map(|e| e.ops_per_s),
            )
        })
        .collect();
    let p99: Vec<_> = rows
        .iter()
        .map(|r| (label(r), r.baton.p99_ms, r.etcd.as_ref().map(|e| e.p99_ms)))
        .collect();
    panel(
        &mut out,
        0.0,
        "Durable writes per second",
        "writes/s (higher is better)",
        &throughput,
    );
    panel(&mut out, W, "p99 latency", "ms (lower is better)", &p99);
    let _ = write!(
        out,
        r#"<rect x="{:.0}" y="{:.0}" width="10" height="10" fill="{BATON}"/><text x="{:.0}" y="{:.0}" font-size="11">baton</text><rect x="{:.0}" y="{:.0}" width="10" height="10" fill="{ETCD}"/><text x="{:.0}" y="{:.0}" font-size="11">etcd 3.4</text></svg>"#,
        W - 120.0,
        H + 5.0,
        W - 105.0,
        H + 14.0,
        W - 50.0,
        H + 5.0,
        W - 35.0,
        H + 14.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Level, Row};

    fn level(clients: usize, ops_per_s: f64, p99_ms: f64) -> Level {
        Level {
            clients,
            ops: 0,
            errors: 0,
            ops_per_s,
            p50_ms: 0.0,
            p99_ms,
            max_ms: 0.0,
            server_cpu_us_per_write: None,
            leader_entries_per_append: None,
            leader_commands_per_entry: None,
        }
    }

    #[test]
    fn draws_a_bar_per_system_and_level() {
        let rows = vec![
            Row {
                clients: 1,
                baton: level(1, 500.0, 2.0),
                etcd: Some(level(1, 1000.0, 1.0)),
                throughput_ratio: Some(0.5),
            },
            Row {
                clients: 10,
                baton: level(10, 2000.0, 9.0),
                etcd: None,
                throughput_ratio: None,
            },
        ];
        let svg = writes(&rows);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        let bars = |fill: &str| svg.matches(&format!(r#"fill="{fill}"/>"#)).count();
        // Two panels; the legend adds one swatch of each colour.
        assert_eq!(bars(BATON), 2 * 2 + 1);
        assert_eq!(bars(ETCD), 2 + 1, "no etcd bar where etcd was not measured");
        assert!(svg.contains("10 clients"));
    }
}

//! Keeps docs/benchmarks.md current: each scenario's figures live between
//! `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, and a run with `--docs`
//! replaces just that section (with the command and the machine), leaving
//! the prose around it alone.

use std::path::Path;

use anyhow::Context;

/// The machine the figures come from, in one line.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores ({model}), {memory_gib:.0} GiB")
}

/// `text` with the section `name` replaced by `body`.
pub fn replace_section(text: &str, name: &str, body: &str) -> anyhow::Result<String> {
    let open = format!("<!-- bench:{name} -->");
    let close = format!("<!-- /bench:{name} -->");
    let start = text
        .find(&open)
        .with_context(|| format!("no {open} marker"))?
        + open.len();
    let end = text[start..]
        .find(&close)
        .with_context(|| format!("no {close} marker after {open}"))?
        + start;
    Ok(format!(
        "{}\n{}\n{}",
        &text[..start],
        body.trim_end(),
        &text[end..]
    ))
}

/// Replaces section `name` of the Markdown file at `path` with the figures
/// of a run of `command`.
pub fn update(path: &Path, name: &str, command: &str, figures: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let body = format!(
        "```\n{command}\n```\n\nMachine: {}. Both clusters run on it in turn, with the load generator.\n\n{figures}",
        machine()
    );
    let text = replace_section(&text, name, &body)
        .with_context(|| format!("{} has no section for `{name}`", path.display()))?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_section() {
        let text = "intro\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\nmiddle\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\nend\n";
        let out = replace_section(text, "a", "new a\n").expect("section a exists");
        assert_eq!(
            out,
            "intro\n<!-- bench:a -->\nnew a\n<!-- /bench:a -->\nmiddle\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\nend\n"
        );
        let twice = replace_section(&out, "a", "new a\n").expect("still there");
        assert_eq!(twice, out, "replacing is idempotent");
        assert!(replace_section(text, "c", "x").is_err());
    }
}

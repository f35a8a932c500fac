//! `worker join --load SPEC`: simulated load, for demos and tests. The load
//! is a function of the partition, not of the worker, so a partition that
//! moves takes its load along, as real work would.
//!
//! - `N`: every partition carries N.
//! - `zipf:S[:SEED]`: the group's partitions ranked in an order drawn from
//!   SEED (default 0); rank r (from 1) carries 1,000,000 / r^S. Every
//!   worker given the same SPEC agrees on every partition's load.
//! - `file:PATH`: lines `PARTITION LOAD` or `FIRST-LAST LOAD`; `#` starts a
//!   comment; partitions not listed carry 0. Read again before every
//!   report: edit the file to shift the load and watch baton follow.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use baton_client::simulated_load;

#[derive(Clone, Debug, PartialEq)]
pub enum LoadSpec {
    Constant(u64),
    Zipf {
        exponent: f64,
        seed: u64,
    },
    File {
        path: PathBuf,
        loads: BTreeMap<u32, u64>,
    },
}

impl LoadSpec {
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        if let Some(rest) = spec.strip_prefix("zipf:") {
            let mut parts = rest.split(':');
            let exponent: f64 = parts.next().unwrap_or_default().parse().with_context(|| {
                format!("--load {spec}: zipf:S needs an exponent S, e.g. zipf:1.1")
            })?;
            if !(exponent.is_finite() && exponent > 0.0 && exponent <= 10.0) {
                bail!("--load {spec}: the exponent must be above 0 and at most 10");
            }
            let seed = match parts.next() {
                None => 0,
                Some(s) => s
                    .parse()
                    .with_context(|| format!("--load {spec}: the seed must be a whole number"))?,
            };
            if parts.next().is_some() {
                bail!("--load {spec}: zipf takes an exponent and a seed, zipf:S[:SEED]");
            }
            return Ok(Self::Zipf { exponent, seed });
        }
        if let Some(path) = spec.strip_prefix("file:") {
            let path = PathBuf::from(path);
            let loads = read(&path).with_context(|| format!("--load {spec}"))?;
            return Ok(Self::File { path, loads });
        }
        match spec.parse() {
            Ok(n) if n > baton_client::worker::MAX_LOAD => {
                bail!("--load {spec}: a load is at most 2^40; use a coarser unit")
            }
            Ok(n) => Ok(Self::Constant(n)),
            Err(_) => bail!(
                "--load {spec}: give a load for every partition (100), zipf:S[:SEED] or file:PATH"
            ),
        }
    }

    /// Reads a `file:PATH` spec's file again: whether its figures changed,
    /// or why it cannot be read (the last figures stand).
    pub fn reread(&mut self) -> anyhow::Result<bool> {
        let Self::File { path, loads } = self else {
            return Ok(false);
        };
        let fresh = read(path)?;
        let changed = fresh != *loads;
        *loads = fresh;
        Ok(changed)
    }

    /// Each partition's load in a group of `partitions`.
    pub fn loads(&self, partitions: u32) -> Vec<u64> {
        match self {
            Self::Constant(n) => vec![*n; partitions as usize],
            Self::File { loads, .. } => (0..partitions)
                .map(|p| loads.get(&p).copied().unwrap_or(0))
                .collect(),
            Self::Zipf { exponent, seed } => simulated_load::zipf(partitions, *exponent, *seed),
        }
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<BTreeMap<u32, u64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    from_lines(&text).with_context(|| path.display().to_string())
}

fn from_lines(text: &str) -> anyhow::Result<BTreeMap<u32, u64>> {
    let mut loads = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "line {}: {line:?} is not `PARTITION LOAD` or `FIRST-LAST LOAD`",
                n + 1
            )
        };
        let (which, load) = line.split_once(char::is_whitespace).with_context(bad)?;
        let load: u64 = load.trim().parse().with_context(bad)?;
        if load > baton_client::worker::MAX_LOAD {
            bail!(
                "line {}: load {load} is over 2^40; use a coarser unit",
                n + 1
            );
        }
        let (first, last) = match which.split_once('-') {
            Some((a, b)) => (a.parse::<u32>(), b.parse::<u32>()),
            None => (which.parse(), which.parse()),
        };
        let (first, last) = (first.with_context(bad)?, last.with_context(bad)?);
        if first > last || last >= 65_536 {
            bail!("{}", bad());
        }
        for p in first..=last {
            loads.insert(p, load);
        }
    }
    Ok(loads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_name_what_is_wrong() {
        assert_eq!(LoadSpec::parse("100").ok(), Some(LoadSpec::Constant(100)));
        assert_eq!(
            LoadSpec::parse("zipf:1.1:7").ok(),
            Some(LoadSpec::Zipf {
                exponent: 1.1,
                seed: 7
            })
        );
        let e = LoadSpec::parse("zipf:x").expect_err("no exponent");
        assert!(format!("{e:#}").contains("needs an exponent"), "{e:#}");
        let e = LoadSpec::parse("lots").expect_err("no spec");
        assert!(
            format!("{e:#}").contains("zipf:S[:SEED] or file:PATH"),
            "{e:#}"
        );
        let path = std::env::temp_dir().join(format!("batonctl-loads-{}.txt", std::process::id()));
        std::fs::write(&path, "# hot\n0 500\n2-3 7\n").expect("write");
        let mut file = LoadSpec::parse(&format!("file:{}", path.display())).expect("file");
        assert_eq!(file.loads(5), vec![500, 0, 7, 7, 0]);
        assert!(!file.reread().expect("unchanged"));
        std::fs::write(&path, "1 9\n").expect("write");
        assert!(file.reread().expect("changed"), "an edit is read");
        assert_eq!(file.loads(3), vec![0, 9, 0]);
        std::fs::write(&path, "0\n").expect("write");
        let e = file.reread().expect_err("no load");
        assert!(format!("{e:#}").contains("line 1"), "{e:#}");
        assert_eq!(file.loads(3), vec![0, 9, 0], "the last figures stand");
        let _ = std::fs::remove_file(&path);
    }
}

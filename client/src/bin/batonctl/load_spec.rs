//! `worker join --load SPEC`: simulated load, for demos and tests. The load
//! is a function of the partition, not of the worker, so a partition that
//! moves takes its load along, as real work would.
//!
//! - `N`: every partition carries N.
//! - `zipf:S[:SEED]`: the group's partitions ranked in an order drawn from
//!   SEED (default 0); rank r (from 1) carries 1,000,000 / r^S. Every
//!   worker given the same SPEC agrees on every partition's load.
//! - `file:PATH`: lines `PARTITION LOAD` or `FIRST-LAST LOAD`; `#` starts a
//!   comment; partitions not listed carry 0.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use baton_client::simulated_load;

#[derive(Clone, Debug, PartialEq)]
pub enum LoadSpec {
    Constant(u64),
    Zipf { exponent: f64, seed: u64 },
    File(BTreeMap<u32, u64>),
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
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--load {spec}: cannot read {path}"))?;
            return Self::from_lines(&text).with_context(|| format!("--load {spec}"));
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

    fn from_lines(text: &str) -> anyhow::Result<Self> {
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
        Ok(Self::File(loads))
    }

    /// Each partition's load in a group of `partitions`.
    pub fn loads(&self, partitions: u32) -> Vec<u64> {
        match self {
            Self::Constant(n) => vec![*n; partitions as usize],
            Self::File(map) => (0..partitions)
                .map(|p| map.get(&p).copied().unwrap_or(0))
                .collect(),
            Self::Zipf { exponent, seed } => simulated_load::zipf(partitions, *exponent, *seed),
        }
    }
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
        let file = LoadSpec::from_lines("# hot\n0 500\n2-3 7\n").expect("file");
        assert_eq!(file.loads(5), vec![500, 0, 7, 7, 0]);
        assert!(LoadSpec::from_lines("0\n").is_err());
    }
}

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

/// Rank 1's load under `zipf`.
const ZIPF_SCALE: f64 = 1_000_000.0;

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
            Self::Zipf { exponent, seed } => {
                let mut order: Vec<u32> = (0..partitions).collect();
                order.sort_by_key(|&p| (splitmix64(seed ^ u64::from(p)), p));
                let mut loads = vec![0; partitions as usize];
                for (rank, p) in order.into_iter().enumerate() {
                    let load = ZIPF_SCALE / ((rank + 1) as f64).powf(*exponent);
                    loads[p as usize] = load.round() as u64;
                }
                loads
            }
        }
    }
}

/// A well-mixed 64-bit hash (SplitMix64's finaliser).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

    #[test]
    fn zipf_ranks_every_partition_once_and_the_seed_decides_the_order() {
        let spec = LoadSpec::parse("zipf:1.0:3").expect("spec");
        let loads = spec.loads(8);
        let mut sorted = loads.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(sorted[0], 1_000_000);
        assert_eq!(sorted[1], 500_000);
        assert_eq!(sorted[7], 125_000);
        assert_eq!(loads, spec.loads(8), "the same for every worker");
        assert_ne!(loads, LoadSpec::parse("zipf:1.0:4").expect("spec").loads(8));
    }
}

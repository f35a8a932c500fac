//! Simulated load for demos and benchmarks: a load per partition that is a
//! function of the partition, not of the worker holding it, so a partition
//! that moves takes its load along, as real work would.

/// Rank 1's load under [`zipf`].
pub const ZIPF_SCALE: f64 = 1_000_000.0;

/// Each of `partitions` partitions' load under a Zipf law: the partitions
/// ranked in an order drawn from `seed`, rank r (from 1) carrying
/// [`ZIPF_SCALE`] / r^`exponent`. The same for everyone given the same
/// arguments; another seed moves the hot set.
pub fn zipf(partitions: u32, exponent: f64, seed: u64) -> Vec<u64> {
    let mut order: Vec<u32> = (0..partitions).collect();
    order.sort_by_key(|&p| (splitmix64(seed ^ u64::from(p)), p));
    let mut loads = vec![0; partitions as usize];
    for (rank, p) in order.into_iter().enumerate() {
        let load = ZIPF_SCALE / ((rank + 1) as f64).powf(exponent);
        loads[p as usize] = load.round() as u64;
    }
    loads
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
    fn zipf_ranks_every_partition_once_and_the_seed_decides_the_order() {
        let loads = zipf(8, 1.0, 3);
        let mut sorted = loads.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(sorted[0], 1_000_000);
        assert_eq!(sorted[1], 500_000);
        assert_eq!(sorted[7], 125_000);
        assert_eq!(loads, zipf(8, 1.0, 3), "the same for everyone");
        assert_ne!(loads, zipf(8, 1.0, 4));
    }
}

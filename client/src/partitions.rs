//! Keys, hashes and partitions, exactly as the server computes them.
//!
//! `hash = XXH3-64(key bytes, seed 0)`, then
//! `partition = (hash as u128 * P as u128) >> 64`: the 64-bit hash space is cut
//! into P equal contiguous ranges, so doubling P (a split) turns partition p
//! into 2p and 2p+1. Any language with an XXH3-64 implementation computes the
//! same partition; pass your own 64-bit hash to route by an explicit hash key.

use std::ops::RangeInclusive;

/// Partitions as inclusive ranges, in ascending order, never adjacent.
pub type Partitions = Vec<RangeInclusive<u32>>;

/// The 64-bit hash of a key (XXH3-64, seed 0).
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The partition of a 64-bit hash among `partitions` equal ranges.
pub fn partition_of_hash(hash: u64, partitions: u32) -> u32 {
    // < partitions, so the cast cannot truncate.
    ((u128::from(hash) * u128::from(partitions)) >> 64) as u32
}

/// The partition of a key among `partitions`.
pub fn partition_of_key(key: &[u8], partitions: u32) -> u32 {
    partition_of_hash(key_hash(key), partitions)
}

/// Merges single partitions (any order, duplicates allowed) into ranges.
pub fn ranges_of(partitions: impl IntoIterator<Item = u32>) -> Partitions {
    let mut all: Vec<u32> = partitions.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    let mut out: Partitions = Vec::new();
    for p in all {
        match out.last_mut() {
            Some(last) if last.end().checked_add(1) == Some(p) => *last = *last.start()..=p,
            _ => out.push(p..=p),
        }
    }
    out
}

/// Every partition in `ranges`.
pub fn each(ranges: &[RangeInclusive<u32>]) -> impl Iterator<Item = u32> + '_ {
    ranges.iter().flat_map(|r| r.clone())
}

pub(crate) fn from_proto(ranges: &[baton_proto::v1::PartitionRange]) -> Partitions {
    ranges.iter().map(|r| r.first..=r.last).collect()
}

pub(crate) fn to_proto(ranges: &[RangeInclusive<u32>]) -> Vec<baton_proto::v1::PartitionRange> {
    ranges
        .iter()
        .map(|r| baton_proto::v1::PartitionRange {
            first: *r.start(),
            last: *r.end(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hash_and_range_edges() {
        // XXH3-64 of the empty input with seed 0, as the reference implementation publishes.
        assert_eq!(key_hash(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(partition_of_hash(0, 7), 0);
        assert_eq!(partition_of_hash(u64::MAX, 7), 6);
        assert_eq!(partition_of_hash(1 << 63, 2), 1);
    }

    #[test]
    fn a_split_sends_each_key_to_a_child_of_its_partition() {
        for key in ["a", "account-42", "chat:9", ""] {
            for p in [1u32, 3, 360, 32_768] {
                let parent = partition_of_key(key.as_bytes(), p);
                let child = partition_of_key(key.as_bytes(), p * 2);
                assert!(child / 2 == parent, "{key} {p}");
            }
        }
    }

    #[test]
    fn ranges_merge_and_expand() {
        let r = ranges_of([5, 1, 2, 3, 9, 2, 10]);
        assert_eq!(r, vec![1..=3, 5..=5, 9..=10]);
        assert_eq!(each(&r).collect::<Vec<_>>(), vec![1, 2, 3, 5, 9, 10]);
        assert!(ranges_of([]).is_empty());
        assert_eq!(
            ranges_of([u32::MAX, u32::MAX - 1]),
            vec![u32::MAX - 1..=u32::MAX]
        );
    }
}

//! Key → partition.
//!
//! `hash = XXH3-64(key bytes, seed 0)`, then
//! `partition = (hash as u128 * P as u128) >> 64`: the 64-bit hash space is cut
//! into P equal contiguous ranges, so doubling P splits partition p into 2p and
//! 2p+1. Any language with an XXH3-64 implementation computes the same result.

use serde::{Deserialize, Serialize};

/// The hash a group uses for its keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyHash {
    /// XXH3, 64-bit, seed 0.
    #[default]
    Xxh3,
}

impl KeyHash {
    pub fn hash(self, key: &[u8]) -> u64 {
        match self {
            KeyHash::Xxh3 => xxhash_rust::xxh3::xxh3_64(key),
        }
    }
}

/// The partition of a 64-bit hash among `partitions` equal ranges.
pub fn partition_of(hash: u64, partitions: u32) -> u32 {
    // < partitions ≤ 2^16, so the cast cannot truncate.
    ((u128::from(hash) * u128::from(partitions)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_splits_each_partition_into_its_two_children() {
        for key in ["a", "account-42", "chat:9", ""] {
            let h = KeyHash::Xxh3.hash(key.as_bytes());
            for p in [1u32, 3, 360, 65_535] {
                let parent = partition_of(h, p);
                let child = partition_of(h, p * 2);
                assert!(child == parent * 2 || child == parent * 2 + 1, "{key} {p}");
            }
        }
    }

    #[test]
    fn range_edges_and_known_value() {
        assert_eq!(partition_of(0, 7), 0);
        assert_eq!(partition_of(u64::MAX, 7), 6);
        assert_eq!(partition_of(1 << 63, 2), 1);
        // XXH3-64 of the empty input with seed 0, as published by the reference implementation.
        assert_eq!(KeyHash::Xxh3.hash(b""), 0x2D06_8005_38D3_94C2);
        // The worked example of docs/key-hashing.md (keys are never empty).
        let h = KeyHash::Xxh3.hash(b"order-42");
        assert_eq!(h, 0x79CC_A591_0B9A_CE3C);
        assert_eq!((partition_of(h, 16), partition_of(h, 32)), (7, 15));
    }
}

//! Arbitrary bytes, as a hostile client could send them, fed to the request
//! decoders of every service and to the conversions the handlers run next:
//! nothing panics, and what decodes converts into bounded, normalized input.

use baton_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

use super::convert;
use crate::domain::validate::MAX_PARTITIONS;
use crate::domain::GroupConfig;
use crate::raft::TypeConfig;

/// Decodes `bytes` as each of `types`; what decodes is re-encoded, which
/// must not panic either.
macro_rules! decode_all {
    ($bytes:expr, $($ty:ty),+ $(,)?) => {
        $(
            if let Ok(m) = <$ty>::decode($bytes) {
                let _ = m.encode_to_vec();
            }
        )+
    };
}

fn ranges_hold(ranges: &[pb::PartitionRange]) {
    if let Ok(normalized) = convert::ranges_from("partitions", ranges) {
        assert!(normalized.len() <= MAX_PARTITIONS as usize);
        for pair in normalized.windows(2) {
            assert!(pair[0].end < pair[1].start, "{normalized:?} is not merged");
        }
    }
}

fn every_request(bytes: &[u8]) {
    decode_all!(
        bytes,
        pb::BackupRequest,
        pb::ListWorkersRequest,
        pb::WorkerRef,
        pb::CreateGroupRequest,
        pb::GetGroupRequest,
        pb::ListGroupsRequest,
        pb::UpdateGroupRequest,
        pb::DeleteGroupRequest,
        pb::SplitGroupRequest,
        pb::SetFrozenRequest,
        pb::GetAssignmentRequest,
        pb::RouteRequest,
        pb::ClusterStatusRequest,
        pb::AddNodeRequest,
        pb::PromoteNodeRequest,
        pb::RemoveNodeRequest,
        pb::BarrierRequest,
        pb::CompactRequest,
        pb::ReadIndexRequest,
        pb::RaftPayload,
        pb::PutTombstoneRequest,
        pb::AckTombstonesRequest,
        pb::CheckTombstonesRequest,
        pb::ListTombstonesRequest,
        pb::WatchRequest,
        pb::JoinRequest,
        pb::KeepAliveRequest,
        pb::LeaveRequest,
    );
    if let Ok(r) = pb::MovePartitionsRequest::decode(bytes) {
        ranges_hold(&r.partitions);
    }
    if let Ok(r) = pb::ReleaseRequest::decode(bytes) {
        ranges_hold(&r.partitions);
    }
    for config in [
        pb::CreateGroupRequest::decode(bytes)
            .ok()
            .and_then(|r| r.config),
        pb::UpdateGroupRequest::decode(bytes)
            .ok()
            .and_then(|r| r.config),
    ]
    .into_iter()
    .flatten()
    {
        let _ = convert::config(GroupConfig::default(), Some(&config)).validate();
    }
    // What the Raft service decodes from a payload (bincode).
    let _ = bincode::deserialize::<openraft::raft::AppendEntriesRequest<TypeConfig>>(bytes);
    let _ = bincode::deserialize::<openraft::raft::VoteRequest<u64>>(bytes);
    let _ = bincode::deserialize::<openraft::raft::InstallSnapshotRequest<TypeConfig>>(bytes);
    let _ = bincode::deserialize::<crate::raft::pre_vote::PreVoteRequest>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        every_request(&bytes);
    }

    /// Well-formed messages with hostile contents: many overlapping and
    /// out-of-range ranges, extreme settings.
    #[test]
    fn hostile_messages_convert_to_bounded_input(
        ranges in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..3_000),
        partitions in any::<u32>(),
        ttl in any::<u64>(),
    ) {
        let request = pb::ReleaseRequest {
            partitions: ranges.iter().map(|&(first, last)| pb::PartitionRange { first, last }).collect(),
            ..Default::default()
        };
        every_request(&request.encode_to_vec());
        let create = pb::CreateGroupRequest {
            group: "g".into(),
            config: Some(pb::GroupConfig {
                partitions: Some(partitions),
                default_ttl_ms: Some(ttl),
                ..Default::default()
            }),
        };
        every_request(&create.encode_to_vec());
    }
}

/// A length prefix claiming more entries than memory holds is refused
/// without allocating them (serde caps what it reserves ahead).
#[test]
fn a_huge_length_prefix_is_refused_not_allocated() {
    let mut bytes = vec![0u8; 64];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    }
    every_request(&bytes);
}

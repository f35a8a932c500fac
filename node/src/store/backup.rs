//! Backup files: the whole applied state (groups, sessions, assignment,
//! tombstones and the event history that is kept) at one revision. The
//! `Backup` RPC (`batonctl backup FILE`) writes one; `baton-node
//! --restore-from FILE` seeds a new cluster from it, at the backup's revision
//! plus `--restore-revision-bump` (see `StateMachineStore::restore_backup`).
//!
//! Layout: the magic `BATONBAK`, the store's [`FORMAT_VERSION`] (u32), the
//! payload's length (u64), the payload (a bincode snapshot payload), and the
//! payload's XXH3-64 (u64); integers big-endian. A truncated, altered or
//! foreign file is refused before anything is written to the data dir.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, CommittedLeaderId, ErrorVerb, Membership};

use super::schema::{FORMAT_VERSION, UPGRADES_FROM};
use super::snapshot::SnapshotPayload;
use super::state_machine::{codec_err, StateMachineStore};
use super::types::{LogId, NodeId, SnapshotMeta, StorageError, StoredMembership};
use super::{decode, encode};
use crate::domain::{Slot, State};

const MAGIC: &[u8; 8] = b"BATONBAK";
const HEADER: usize = MAGIC.len() + 4 + 8;
const TRAILER: usize = 8;

/// An exported backup file.
pub struct Backup {
    /// The revision the state is at.
    pub revision: u64,
    pub bytes: Vec<u8>,
}

/// Where a restore put the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The revision the backup was taken at.
    pub backup_revision: u64,
    /// The revision the restored cluster starts at: the backup's plus the
    /// margin, with the history up to it compacted.
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a baton backup file (it does not start with {:?})", std::str::from_utf8(MAGIC).unwrap_or_default())]
    NotABackup,
    #[error("the backup is in baton on-disk format {found}; this binary reads format {FORMAT_VERSION}: restore with the baton-node version that wrote it")]
    Format { found: u32 },
    #[error("the backup file is truncated or has trailing bytes: {found} bytes, its header says {expected}")]
    Length { found: usize, expected: u64 },
    #[error("the backup file is damaged: its checksum does not match its contents")]
    Checksum,
    #[error("the backup's contents cannot be decoded: {0}")]
    Decode(String),
    #[error("the backup is at revision {revision}; a jump of {bump} revisions past it does not fit in 64 bits: give a smaller --restore-revision-bump")]
    Bump { revision: u64, bump: u64 },
    #[error("cannot write the restored state: {0}")]
    Storage(#[from] StorageError),
}

/// Frames an encoded payload as a backup file.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_be_bytes());
    bytes
}

/// The payload of a backup file, after checking its frame.
fn unframe(bytes: &[u8]) -> Result<&[u8], BackupError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let field = |at: usize, len: usize| bytes.get(at..at + len);
    let u32_at = |at| {
        field(at, 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let u64_at = |at| {
        field(at, 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let truncated = |expected| BackupError::Length {
        found: bytes.len(),
        expected,
    };
    let format = u32_at(MAGIC.len()).ok_or(truncated(HEADER as u64))?;
    // Format 4's backups hold the same payload (its revision was also its
    // log index).
    if format != FORMAT_VERSION && format != UPGRADES_FROM {
        return Err(BackupError::Format { found: format });
    }
    let len = u64_at(MAGIC.len() + 4).ok_or(truncated(HEADER as u64))?;
    let expected = len.saturating_add((HEADER + TRAILER) as u64);
    if bytes.len() as u64 != expected {
        return Err(truncated(expected));
    }
    let payload = &bytes[HEADER..bytes.len() - TRAILER];
    let checksum = u64_at(bytes.len() - TRAILER).ok_or(truncated(expected))?;
    if xxhash_rust::xxh3::xxh3_64(payload) != checksum {
        return Err(BackupError::Checksum);
    }
    Ok(payload)
}

impl StateMachineStore {
    /// The applied state as a backup file. Blocks for as long as encoding
    /// takes: call it off the runtime's threads.
    pub fn export_backup(&self) -> Result<Backup, StorageError> {
        let payload = self.payload()?;
        let data = encode(&payload).map_err(codec_err(ErrorVerb::Read))?;
        Ok(Backup {
            revision: payload.state.revision,
            bytes: frame(&data),
        })
    }

    /// Makes a backup file the state of this (empty) store, as a snapshot
    /// whose membership is `members`, all voters, at the backup's revision
    /// plus `bump`, with the history up to there compacted. The cluster the
    /// backup came from may have gone on past it: the jump keeps every later
    /// revision and fencing token above the ones it handed out (if it wrote
    /// fewer than `bump` entries after the backup), and a watch from that
    /// lost range gets COMPACTED instead of unrelated events. The state's
    /// own revisions (config revisions, sessions, tokens, tombstones) are the
    /// backup's, all below the jump. The restored revision is also the
    /// snapshot's log index (the two may differ in the backup: entries can
    /// carry batches), so every member must restore with the same `bump`;
    /// its log id has term 0, which any election after the restore is above.
    pub async fn restore_backup(
        &mut self,
        file: &[u8],
        members: BTreeMap<NodeId, BasicNode>,
        bump: u64,
    ) -> Result<Restored, BackupError> {
        let payload: SnapshotPayload =
            decode(unframe(file)?).map_err(|e| BackupError::Decode(e.to_string()))?;
        let backup_revision = payload.state.revision;
        let revision = backup_revision.checked_add(bump).ok_or(BackupError::Bump {
            revision: backup_revision,
            bump,
        })?;
        let log_id = LogId::new(CommittedLeaderId::new(0, 0), revision);
        let voters: BTreeSet<NodeId> = members.keys().copied().collect();
        let membership =
            StoredMembership::new(Some(log_id), Membership::new(vec![voters], members));
        let mut state = State {
            revision,
            compacted: revision,
            ..payload.state
        };
        // The lost cluster may have moved a partition after the backup and
        // handed its new owner a token above the backup's: the owner the
        // backup names must not come back with its older, smaller token,
        // which every sink that saw the newer one refuses. Every held
        // partition is granted anew at the restored revision (as a split
        // does); watchers re-list after the compaction and learn the tokens.
        for g in state.groups.values_mut() {
            let held = g.assignment.find(|s| s.owner.is_some());
            g.assignment.update_ranges(&held, |s| Slot {
                token: revision,
                ..s.clone()
            });
        }
        let restored = SnapshotPayload {
            last_applied: Some(log_id),
            membership: membership.clone(),
            state,
            history: Vec::new(),
        };
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: membership,
            snapshot_id: format!("restored-{backup_revision}-at-{revision}"),
        };
        let data = encode(&restored).map_err(|e| BackupError::Decode(e.to_string()))?;
        self.install_snapshot(&meta, Box::new(Cursor::new(data)))
            .await?;
        Ok(Restored {
            backup_revision,
            revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_payload_reads_back_and_damage_is_named() {
        let file = frame(b"state");
        assert_eq!(unframe(&file).ok(), Some(&b"state"[..]));

        let mut flipped = file.clone();
        flipped[HEADER] ^= 1;
        assert!(matches!(unframe(&flipped), Err(BackupError::Checksum)));
        assert!(matches!(
            unframe(&file[..file.len() - 1]),
            Err(BackupError::Length { .. })
        ));
        assert!(matches!(
            unframe(&file[..10]),
            Err(BackupError::Length { .. })
        ));
        assert!(matches!(
            unframe(b"{\"json\": 1}"),
            Err(BackupError::NotABackup)
        ));
        let mut other_format = file;
        other_format[MAGIC.len() + 3] ^= 0xff;
        assert!(matches!(
            unframe(&other_format),
            Err(BackupError::Format { .. })
        ));
    }
}

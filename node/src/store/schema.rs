//! The on-disk layout: every sled tree and every key baton writes, in one
//! place (as etcd keeps its bucket names in `schema/bucket.go`). Changing
//! any name or encoding here changes the on-disk format: bump
//! [`FORMAT_VERSION`].
//!
//! Trees of the database under `<data-dir>/sled`:
//!
//! - `meta`: the format version, the Raft vote, the log's purge point and
//!   commit hint, and the state machine's current generation.
//! - `snapshot`: the stored snapshot, alone.
//! - `log`: one entry per key, the key the index in big-endian (so that
//!   sled's byte order is the log's order).
//! - `sm.<generation>`: the applied state of one generation: the applied
//!   position and revision, the membership, the compacted revision and the
//!   event history (`hist/` + big-endian revision).
//! - `checkpoint.<generation>`: that generation's state checkpoint, alone.
//!
//! The snapshot and the checkpoint (each the whole state, megabytes) live in
//! trees of their own because sled writes a tree node as a whole, and one
//! over its size limit as a blob file: sharing a node with the applied
//! position (written per apply) or the commit hint (written per commit) made
//! every apply or commit write a copy of the whole state to a new file
//! (1.7× the CPU per write at 100 clients, issue 22). Format 4 kept both in
//! the shared trees; opening a data dir that has them there moves them.
//!
//! All values are bincode.

/// On-disk format written by this binary. Bumped on any incompatible change; a
/// node refuses to start on a data dir of another format instead of misreading it.
///
/// 5: the revision counts commands, not log entries ([`KEY_REVISION`]), an
/// entry may hold a batch of commands, and the snapshot and checkpoint have
/// trees of their own. A node reads format 4 (where the
/// revision was the log index) and marks the data dir 5 when it opens it:
/// a format-4 node would take the log index for the revision.
pub const FORMAT_VERSION: u32 = 5;

/// The older format this binary upgrades in place when it opens it.
pub const UPGRADES_FROM: u32 = 4;

/// The sled database's directory under the data dir.
pub const DB_DIR: &str = "sled";

// ---- the `meta` tree -------------------------------------------------------

pub const META_TREE: &str = "meta";
/// [`FORMAT_VERSION`] as a big-endian u32 (not bincode: read before anything
/// else is trusted).
pub const KEY_FORMAT_VERSION: &[u8] = b"format_version";
/// The Raft vote.
pub const KEY_VOTE: &[u8] = b"vote";
/// The log id up to which the log is purged.
pub const KEY_LAST_PURGED: &[u8] = b"last_purged";
/// The commit index openraft last reported (a hint, not flushed).
pub const KEY_COMMITTED: &[u8] = b"committed";
/// The state machine's current generation (a u64).
pub const KEY_GENERATION: &[u8] = b"sm_generation";
/// The current snapshot: its metadata and data in one value, in
/// [`SNAPSHOT_TREE`] (in `meta` in format 4).
pub const KEY_SNAPSHOT: &[u8] = b"snapshot";

// ---- the `snapshot` tree ---------------------------------------------------

pub const SNAPSHOT_TREE: &str = "snapshot";

// ---- the `log` tree --------------------------------------------------------

pub const LOG_TREE: &str = "log";

/// The key of the log entry at `index`.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index a log key stands for.
pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

// ---- the generation trees `sm.<n>` ------------------------------------------

pub const GENERATION_PREFIX: &str = "sm.";
/// The last applied log id.
pub const KEY_APPLIED: &[u8] = b"applied";
/// The revision of the applied state (a u64: commands applied, not log
/// entries), written with [`KEY_APPLIED`]. Absent in format 4, whose
/// revision was the applied log index.
pub const KEY_REVISION: &[u8] = b"revision";
/// The last applied membership.
pub const KEY_MEMBERSHIP: &[u8] = b"membership";
/// The state checkpoint (the whole domain state at some revision), in the
/// generation's checkpoint tree (in `sm.<generation>` in format 4).
pub const KEY_STATE: &[u8] = b"state";
/// The compacted revision, when it moved past the checkpoint's.
pub const KEY_COMPACTED: &[u8] = b"compacted";
const HISTORY_PREFIX: &[u8] = b"hist/";

/// The name of generation `generation`'s tree.
pub fn generation_tree_name(generation: u64) -> String {
    format!("{GENERATION_PREFIX}{generation}")
}

pub const CHECKPOINT_PREFIX: &str = "checkpoint.";

/// The name of generation `generation`'s checkpoint tree.
pub fn checkpoint_tree_name(generation: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{generation}")
}

/// The key of the events applied at `revision`, in a generation tree.
pub fn history_key(revision: u64) -> Vec<u8> {
    let mut key = HISTORY_PREFIX.to_vec();
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

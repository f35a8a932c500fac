//! Durable storage on sled: the Raft log and vote ([`LogStore`]) and the state
//! machine with its snapshots ([`StateMachineStore`]), in one sled database under
//! the node's data dir.
//!
//! Files: [`schema`] names every tree and key on disk; [`types`] declares
//! the openraft type configuration the store is written against;
//! `log` is the Raft log; `state_machine` the applied state, with
//! `apply` (applying entries), `snapshot` (building and installing
//! snapshots), `backup` (backup files), `history` (reading the event
//! history) and [`metrics`] adding to it.
//!
//! Durability contract: nothing openraft is told is persisted (a vote, a log
//! append, a snapshot) is acknowledged before `sled` has flushed it to disk.
//! The applied state is the exception: it is rebuilt from the log, which is
//! never purged past the applied state on disk (`LogStore::purge`). Each
//! point where that matters says so in a comment.

mod apply;
mod backup;
mod history;
mod log;
pub mod metrics;
pub mod schema;
mod snapshot;
mod state_machine;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use apply::CHECKPOINT_EVERY;
pub use backup::{Backup, BackupError, Restored};
pub use history::HISTORY_READ_BYTES;
pub use log::LogStore;
pub use metrics::StoreMetrics;
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
pub use schema::FORMAT_VERSION;
use schema::{DB_DIR, KEY_FORMAT_VERSION, META_TREE, UPGRADES_FROM};
pub use state_machine::StateMachineStore;
use types::{NodeId, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the sled database at {path}: {source} (is another baton-node using this data dir?)")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("data dir {path} holds baton on-disk format {found}, this binary reads format {FORMAT_VERSION}; use a matching baton-node or a fresh --data-dir")]
    FormatVersion { path: PathBuf, found: u32 },
    #[error("data dir {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Opens (or creates) the node's storage under `data_dir`.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    let path = data_dir.join(DB_DIR);
    let sled_err = |source| OpenError::Sled {
        path: path.clone(),
        source,
    };
    let config = sled::Config::new()
        .path(&path)
        // Flushes are explicit (see the durability contract); the background
        // flusher only adds writes.
        .flush_every_ms(None);
    // sled releases its file lock only when its last background IO is done,
    // a moment after the last handle is dropped: a restart in the same process
    // (or right after a previous process) may find it still held. Retry
    // briefly before concluding that another node owns the data dir.
    let mut attempts = 0;
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            Err(e) if attempts < 50 && e.to_string().contains("could not acquire lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(40));
            }
            Err(e) => return Err(sled_err(e)),
        }
    };
    check_format(&db, &path)?;
    let corrupt = |e: StorageError| OpenError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    };
    let sm = StateMachineStore::open(db.clone()).map_err(corrupt)?;
    let log = LogStore::open(
        db,
        sm.metrics().log_append_entries.clone(),
        Arc::clone(sm.hub()),
    )
    .map_err(corrupt)?;
    Ok((log, sm))
}

/// Writes the format version into a fresh database, or checks the one found.
fn check_format(db: &sled::Db, path: &Path) -> Result<(), OpenError> {
    let sled_err = |source| OpenError::Sled {
        path: path.to_path_buf(),
        source,
    };
    let meta = db.open_tree(META_TREE).map_err(sled_err)?;
    match meta.get(KEY_FORMAT_VERSION).map_err(sled_err)? {
        Some(v) => {
            let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| OpenError::Corrupt {
                path: path.to_path_buf(),
                reason: "format version key is not 4 bytes".into(),
            })?;
            let found = u32::from_be_bytes(bytes);
            if found == UPGRADES_FROM {
                // Read as format 4 where the revision key is missing (see
                // `StateMachineStore::open`); marked 5 so that a format-4
                // node, which would take log indexes for revisions, refuses it.
                meta.insert(KEY_FORMAT_VERSION, &FORMAT_VERSION.to_be_bytes())
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
                tracing::info!(
                    "data dir {} upgraded from on-disk format {found} to {FORMAT_VERSION}",
                    path.display()
                );
            } else if found != FORMAT_VERSION {
                return Err(OpenError::FormatVersion {
                    path: path.to_path_buf(),
                    found,
                });
            }
        }
        None => {
            // Only a database with nothing else in it is fresh; one with data
            // but no version was not written by baton.
            let names = db.tree_names();
            let has_data = names
                .iter()
                .any(|n| db.open_tree(n).map(|t| !t.is_empty()).unwrap_or(true));
            if has_data {
                return Err(OpenError::Corrupt {
                    path: path.to_path_buf(),
                    reason: "it holds data but no format version".into(),
                });
            }
            meta.insert(KEY_FORMAT_VERSION, &FORMAT_VERSION.to_be_bytes())
                .map_err(sled_err)?;
            db.flush().map_err(sled_err)?;
        }
    }
    Ok(())
}

/// Flushes and closes the storage. Every acknowledged write was flushed
/// already; this only makes sure nothing buffered is left behind.
pub async fn close(log: LogStore, sm: StateMachineStore) -> anyhow::Result<()> {
    log.flush_and_close().await?;
    drop(sm);
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(value)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

/// Builds an openraft storage error from any error, naming what failed.
fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, &e).into()
}

#[cfg(test)]
mod tests;

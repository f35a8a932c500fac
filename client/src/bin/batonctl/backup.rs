//! `batonctl backup FILE`: the whole state, as of now, into a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use baton_client::AdminClient;
use serde::Serialize;

use crate::output::{reply, Reply, View};

#[derive(clap::Args)]
pub struct BackupArgs {
    /// Where to write it; written to FILE.partial first, then renamed.
    file: PathBuf,
}

/// Writes the leader's backup into the file through `FILE.partial`, synced,
/// then renamed, so the file is either whole or absent.
pub async fn run(client: &mut AdminClient, args: BackupArgs) -> anyhow::Result<Box<dyn Reply>> {
    let file = args.file;
    let backup = client.backup().await?;
    write_whole(&file, &backup.data)?;
    Ok(reply(BackupView {
        file: file.display().to_string(),
        revision: backup.revision,
        bytes: backup.data.len(),
    }))
}

fn write_whole(file: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut out = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    out.write_all(data)
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), file.display()))
}

#[derive(Serialize)]
struct BackupView {
    file: String,
    revision: u64,
    bytes: usize,
}

impl View for BackupView {
    fn text(&self) -> String {
        format!(
            "backup at revision {}: {} bytes written to {}\n",
            self.revision, self.bytes, self.file
        )
    }
}

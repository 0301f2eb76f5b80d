//! `edgeflow keys`: an edge's Ed25519 key pair, which signs every frame the edge sends (the
//! private `.key` stays on the edge, the public `.pub` is enrolled in the cloud's
//! `--edge-keys` directory).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use edgeflow_connectors::identity::write_key_pair;

/// The `keys` subcommands.
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new key pair for an edge: `<edge-id>.key` (private, PKCS#8 PEM, mode 0600)
    /// and `<edge-id>.pub` (public, SPKI PEM). Never overwrites a key.
    New {
        /// The edge the key is for (its `--edge-id`).
        #[arg(long)]
        edge_id: String,
        /// Directory to write both files to.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// `edgeflow keys new`: writes the pair and says where each file goes.
pub fn new_keys(edge_id: &str, dir: &Path) -> Result<ExitCode> {
    if !edgeflow::spec::is_valid_edge_id(edge_id) {
        return Err(anyhow!(
            "--edge-id {edge_id:?}: use letters, digits, '-', '_' and '.'"
        ));
    }
    let (private, public) = write_key_pair(edge_id, dir)?;
    println!("{}", private.display());
    println!("{}", public.display());
    eprintln!(
        "edgeflow: keep {} on edge {edge_id} only (edgeflow edge --edge-id {edge_id} --edge-key {}); \
         copy {} into the cloud's --edge-keys directory",
        private.display(),
        private.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

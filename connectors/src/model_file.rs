//! Bounded reading of model files: regular files only, at most
//! [`MAX_MODEL_BYTES`](edgeflow_operators::infer::model::MAX_MODEL_BYTES) (64 MiB), and, for a model
//! named in a control record, a path that stays inside the pipeline's directory or an allowed
//! model directory.
//!
//! A pipeline file's own `model:` setting is written by the pipeline's author and may name any
//! regular file ([`read_model_file`]). A `swap_model` control record arrives over the network,
//! so its path ([`read_requested_model`]) is resolved against the pipeline file's directory
//! and canonicalized (symbolic links and `..` followed); the result must lie inside that
//! directory or inside one of the directories listed in the `EDGEFLOW_MODEL_DIR` environment
//! variable ([`ModelDirs::from_env`], a `:`-separated list like `PATH`). Absolute paths
//! are accepted only inside those directories.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use edgeflow_operators::infer::model::MAX_MODEL_BYTES;

use crate::error::{ConnectorError, Result};

/// The environment variable listing directories (besides the pipeline's own) a `swap_model`
/// control record may read models from.
pub const MODEL_DIR_ENV: &str = "EDGEFLOW_MODEL_DIR";

/// Directories, besides the pipeline's own, that models named in control records may come
/// from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelDirs {
    /// The allowed directories (canonicalized when checked).
    pub allowed: Vec<PathBuf>,
}

impl ModelDirs {
    /// The directories listed in [`MODEL_DIR_ENV`] (none when it is unset or empty).
    pub fn from_env() -> Self {
        let allowed = std::env::var_os(MODEL_DIR_ENV)
            .map(|dirs| {
                std::env::split_paths(&dirs)
                    .filter(|d| !d.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        ModelDirs { allowed }
    }
}

/// Reads a model file: it must be a regular file of at most `MAX_MODEL_BYTES` bytes
/// (a device, a FIFO or a directory is refused before it is read, and a file that grows past
/// the bound while being read is refused without reading more than the bound).
pub fn read_model_file(path: &Path) -> Result<Vec<u8>> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| ConnectorError::io("read", path, e))?;
    check_regular_and_small(&metadata, path)?;
    let file = File::open(path).map_err(|e| ConnectorError::io("open", path, e))?;
    // The file opened may not be the one checked (it was replaced in between): check again.
    let opened = file
        .metadata()
        .map_err(|e| ConnectorError::io("read", path, e))?;
    check_regular_and_small(&opened, path)?;
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    file.take(MAX_MODEL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConnectorError::io("read", path, e))?;
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(ConnectorError::User(format!(
            "model file {shown} is larger than the {MAX_MODEL_BYTES}-byte bound"
        )));
    }
    Ok(bytes)
}

fn check_regular_and_small(metadata: &std::fs::Metadata, path: &Path) -> Result<()> {
    let shown = path.display();
    if !metadata.is_file() {
        return Err(ConnectorError::User(format!(
            "model {shown} is not a regular file"
        )));
    }
    if metadata.len() > MAX_MODEL_BYTES {
        return Err(ConnectorError::User(format!(
            "model file {shown} is {} bytes, larger than the {MAX_MODEL_BYTES}-byte bound",
            metadata.len()
        )));
    }
    Ok(())
}

/// Reads the model a control record names: `requested` resolved against `pipeline_dir` (the
/// pipeline file's directory; empty means the working directory), canonicalized, and required
/// to lie inside `pipeline_dir` or one of `dirs`; then read as [`read_model_file`] does.
pub fn read_requested_model(
    pipeline_dir: &Path,
    requested: &str,
    dirs: &ModelDirs,
) -> Result<Vec<u8>> {
    let base = if pipeline_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        pipeline_dir
    };
    let joined = base.join(requested);
    let resolved = joined
        .canonicalize()
        .map_err(|e| ConnectorError::io("read model", Path::new(requested), e))?;
    let inside = |dir: &Path| {
        dir.canonicalize()
            .is_ok_and(|dir| resolved.starts_with(dir))
    };
    if !inside(base) && !dirs.allowed.iter().any(|d| inside(d)) {
        let allowed = if dirs.allowed.is_empty() {
            format!("{MODEL_DIR_ENV} is not set")
        } else {
            format!(
                "nor inside {MODEL_DIR_ENV} ({})",
                std::env::join_paths(&dirs.allowed)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )
        };
        return Err(ConnectorError::User(format!(
            "model {requested:?} resolves to {}, outside the pipeline's directory {} ({allowed}); \
             put the model there or list its directory in {MODEL_DIR_ENV}",
            resolved.display(),
            base.display()
        )));
    }
    read_model_file(&resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<Vec<u8>>) -> String {
        let e = result.unwrap_err();
        assert!(e.is_user_error(), "{e}");
        e.to_string()
    }

    #[test]
    fn a_requested_model_must_stay_inside_the_pipeline_directory_or_an_allowed_one() {
        // Regression (issue 12, cases 3 and 7): swap_model read any path, /dev/urandom forever.
        let root = tempfile::tempdir().unwrap();
        let pipeline = root.path().join("pipeline");
        let models = root.path().join("models");
        std::fs::create_dir_all(pipeline.join("sub")).unwrap();
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(pipeline.join("sub/m.bpk"), b"inside").unwrap();
        std::fs::write(models.join("shared.bpk"), b"shared").unwrap();
        std::fs::write(root.path().join("secret"), b"outside").unwrap();
        let none = ModelDirs::default();
        assert_eq!(
            read_requested_model(&pipeline, "sub/m.bpk", &none).unwrap(),
            b"inside"
        );
        assert_eq!(
            read_requested_model(&pipeline, "sub/../sub/m.bpk", &none).unwrap(),
            b"inside"
        );
        let escape = refused(read_requested_model(&pipeline, "../secret", &none));
        assert!(
            escape.contains("outside the pipeline's directory"),
            "{escape}"
        );
        assert!(escape.contains("EDGEFLOW_MODEL_DIR is not set"), "{escape}");
        for path in ["/etc/passwd", "/dev/urandom", "../../../../etc/passwd"] {
            let e = refused(read_requested_model(&pipeline, path, &none));
            assert!(
                e.contains("outside the pipeline's directory"),
                "{path}: {e}"
            );
        }
        // A symbolic link inside the directory that points out is followed, then refused.
        std::os::unix::fs::symlink("/dev/urandom", pipeline.join("link.bpk")).unwrap();
        let e = refused(read_requested_model(&pipeline, "link.bpk", &none));
        assert!(e.contains("resolves to /dev/urandom"), "{e}");

        let shared = ModelDirs {
            allowed: vec![models.clone()],
        };
        let absolute = models.join("shared.bpk");
        assert_eq!(
            read_requested_model(&pipeline, absolute.to_str().unwrap(), &shared).unwrap(),
            b"shared"
        );
        assert_eq!(
            read_requested_model(&pipeline, "../models/shared.bpk", &shared).unwrap(),
            b"shared"
        );
        assert!(read_requested_model(&pipeline, "../secret", &shared).is_err());
        // Inside an allowed directory, a device is still not a model file.
        let dev = ModelDirs {
            allowed: vec!["/dev".into()],
        };
        let e = refused(read_requested_model(&pipeline, "/dev/urandom", &dev));
        assert!(e.contains("is not a regular file"), "{e}");
        let missing = read_requested_model(&pipeline, "nope.bpk", &none).unwrap_err();
        assert!(
            crate::error::chain(&missing).contains("nope.bpk"),
            "{missing}"
        );
    }

    #[test]
    fn model_files_are_bounded_and_regular() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.bpk");
        File::create(&big)
            .unwrap()
            .set_len(MAX_MODEL_BYTES + 1)
            .unwrap();
        let e = refused(read_model_file(&big));
        assert!(
            e.contains(&format!(
                "is {} bytes, larger than the {MAX_MODEL_BYTES}-byte bound",
                MAX_MODEL_BYTES + 1
            )),
            "{e}"
        );
        let exact = dir.path().join("exact.bpk");
        File::create(&exact)
            .unwrap()
            .set_len(MAX_MODEL_BYTES)
            .unwrap();
        assert_eq!(
            read_model_file(&exact).unwrap().len() as u64,
            MAX_MODEL_BYTES
        );
        assert!(refused(read_model_file(dir.path())).contains("is not a regular file"));
        assert!(refused(read_model_file(Path::new("/dev/zero"))).contains("not a regular file"));
    }
}

//! A temp directory removed on drop.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `/tmp/<name>` (must not exist yet).
    pub fn new(name: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).with_context(|| format!("creating temp dir {}", path.display()))?;
        Ok(TempDir { path, keep: false })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Leaves the directory in place on drop (lab --keep).
    pub fn disarm(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

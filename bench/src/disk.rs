//! Size of a data directory on disk, counted like `du` (allocated blocks) and like
//! `du --apparent-size` (file lengths). Both matter: etcd preallocates WAL segments, so the
//! two differ and a reader should see both.

use std::path::Path;

use crate::error::BenchError;

/// Allocated and apparent bytes of everything under a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of allocated 512-byte blocks.
    pub allocated: u64,
    /// Sum of file lengths.
    pub apparent: u64,
}

/// Walks `dir` (without following symlinks) and adds up its regular files.
pub fn usage(dir: &Path) -> Result<Usage, BenchError> {
    use std::os::unix::fs::MetadataExt;
    let mut total = Usage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| BenchError::io(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| BenchError::io(&d, e))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| BenchError::io(&path, e))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                total.allocated += meta.blocks() * 512;
                total.apparent += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn counts_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut f = std::fs::File::create(dir.path().join("sub/a")).unwrap();
        f.write_all(&[1u8; 10_000]).unwrap();
        f.sync_all().unwrap();
        std::fs::write(dir.path().join("b"), b"hello").unwrap();
        let u = usage(dir.path()).unwrap();
        assert_eq!(u.apparent, 10_005);
        assert!(u.allocated >= 10_000, "{u:?}");
    }

    #[test]
    fn missing_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(usage(&dir.path().join("nope")).is_err());
    }
}

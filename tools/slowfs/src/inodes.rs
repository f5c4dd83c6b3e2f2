//! The inode table: which backing path each FUSE inode number stands for.
//!
//! FUSE speaks in inode numbers, the backing directory in paths. Numbers are handed out here
//! (1 is the root) and live as long as the kernel holds a lookup reference, so that a rename
//! of a directory moves every inode below it and an unlinked file that is still open keeps its
//! number (its I/O goes through the open handle, never through the path). Only this mount
//! changes the backing directory while it is mounted, so the table never has to rescan it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::FsError;

/// FUSE's root inode number.
pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    /// None once unlinked: the kernel may still hold it (open files) until it forgets it.
    path: Option<PathBuf>,
    /// Lookups the kernel has not forgotten yet; at zero the number may be reused.
    lookups: u64,
}

/// Inode number ↔ backing path, both ways.
#[derive(Debug)]
pub struct Inodes {
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    /// A table holding only the root, which stands for `root` (the backing directory).
    pub fn new(root: PathBuf) -> Self {
        let mut nodes = HashMap::new();
        let mut by_path = HashMap::new();
        by_path.insert(root.clone(), ROOT);
        nodes.insert(ROOT, Node { path: Some(root), lookups: 1 });
        Inodes { nodes, by_path, next: ROOT + 1 }
    }

    /// The backing path of `ino`.
    pub fn path(&self, ino: u64) -> Result<PathBuf, FsError> {
        match self.nodes.get(&ino) {
            Some(Node { path: Some(path), .. }) => Ok(path.clone()),
            Some(Node { path: None, .. }) => Err(FsError::Unlinked(ino)),
            None => Err(FsError::UnknownInode(ino)),
        }
    }

    /// The backing path of entry `name` in directory `parent`.
    pub fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, FsError> {
        Ok(self.path(parent)?.join(name))
    }

    /// The inode number of `path`, counting one more kernel lookup of it (a new number if the
    /// path had none).
    pub fn remember(&mut self, path: PathBuf) -> u64 {
        if let Some(&ino) = self.by_path.get(&path)
            && let Some(node) = self.nodes.get_mut(&ino)
        {
            node.lookups += 1;
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_path.insert(path.clone(), ino);
        self.nodes.insert(ino, Node { path: Some(path), lookups: 1 });
        ino
    }

    /// The kernel dropped `count` lookups of `ino`; at zero the number is gone.
    pub fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else { return };
        node.lookups = node.lookups.saturating_sub(count);
        if node.lookups == 0 {
            if let Some(path) = &node.path {
                self.by_path.remove(path);
            }
            self.nodes.remove(&ino);
        }
    }

    /// `path` was unlinked or removed: its inode (if any) keeps its number but loses its name.
    pub fn unlinked(&mut self, path: &Path) {
        if let Some(ino) = self.by_path.remove(path)
            && let Some(node) = self.nodes.get_mut(&ino)
        {
            node.path = None;
        }
    }

    /// `from` was renamed to `to` (replacing whatever `to` was): `from` and everything below it
    /// now live under `to`.
    pub fn renamed(&mut self, from: &Path, to: &Path) {
        if from == to {
            return;
        }
        self.unlinked(to);
        for (old, ino) in self.take_subtree(from) {
            self.put(to, from, old, ino);
        }
    }

    /// `a` and `b` swapped places (renameat2 with RENAME_EXCHANGE).
    pub fn exchanged(&mut self, a: &Path, b: &Path) {
        let under_a = self.take_subtree(a);
        let under_b = self.take_subtree(b);
        for (old, ino) in under_a {
            self.put(b, a, old, ino);
        }
        for (old, ino) in under_b {
            self.put(a, b, old, ino);
        }
    }

    /// Removes `top` and every path below it from the path index, returning them.
    fn take_subtree(&mut self, top: &Path) -> Vec<(PathBuf, u64)> {
        let paths: Vec<PathBuf> = self.by_path.keys().filter(|p| p.starts_with(top)).cloned().collect();
        paths.into_iter().filter_map(|p| self.by_path.remove(&p).map(|ino| (p, ino))).collect()
    }

    /// Re-indexes `old` (which was under `from`) at the same place under `to`.
    fn put(&mut self, to: &Path, from: &Path, old: PathBuf, ino: u64) {
        let new = match old.strip_prefix(from) {
            Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
            Ok(rest) => to.join(rest),
            Err(_) => old,
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.path = Some(new.clone());
        }
        self.by_path.insert(new, ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table rooted at /b that has looked up `paths`, and their numbers.
    fn table(paths: &[&str]) -> (Inodes, Vec<u64>) {
        let mut t = Inodes::new(PathBuf::from("/b"));
        let inos = paths.iter().map(|p| t.remember(PathBuf::from(p))).collect();
        (t, inos)
    }

    fn at(t: &Inodes, ino: u64) -> Option<String> {
        t.path(ino).ok().map(|p| p.to_string_lossy().into_owned())
    }

    #[test]
    fn rename_moves_the_subtree_and_replaces_the_target() {
        let (mut t, inos) = table(&["/b/tmp", "/b/tmp/wal", "/b/wal"]);
        t.renamed(Path::new("/b/tmp"), Path::new("/b/wal"));
        assert_eq!([at(&t, inos[0]), at(&t, inos[1])], [Some("/b/wal".into()), Some("/b/wal/wal".into())]);
        assert!(matches!(t.path(inos[2]), Err(FsError::Unlinked(_))));
        t.forget(inos[2], 1);
        assert!(matches!(t.path(inos[2]), Err(FsError::UnknownInode(_))));
    }

    #[test]
    fn exchange_swaps_two_subtrees() {
        let (mut t, inos) = table(&["/b/a", "/b/a/1", "/b/b"]);
        t.exchanged(Path::new("/b/a"), Path::new("/b/b"));
        let now: Vec<_> = inos.iter().map(|&ino| at(&t, ino)).collect();
        assert_eq!(now, [Some("/b/b".into()), Some("/b/b/1".into()), Some("/b/a".into())]);
    }

    #[test]
    fn lookups_are_counted_before_a_number_is_dropped() {
        let mut t = Inodes::new(PathBuf::from("/b"));
        let f = t.remember(PathBuf::from("/b/f"));
        assert_eq!(t.remember(PathBuf::from("/b/f")), f);
        t.forget(f, 1);
        assert!(t.path(f).is_ok());
        t.forget(f, 1);
        assert!(t.path(f).is_err());
        t.forget(ROOT, 10);
        assert!(t.path(ROOT).is_ok());
    }
}

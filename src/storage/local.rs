use super::{Result, Storage, StorageError};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Storage in a local folder; keys are relative paths below it.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(StorageError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(rel))
    }

    fn io(&self, key: &str, source: std::io::Error) -> StorageError {
        StorageError::Io {
            location: self.url(key),
            source,
        }
    }
}

impl Storage for LocalStorage {
    fn url(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(key)?) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(key, e)),
        }
    }

    /// Writes to a temporary file in the same folder, syncs it, then renames
    /// it over the target, so a crash leaves either the old or the new file.
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| self.io(key, e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(key, e));
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path(prefix.trim_end_matches('/'))?
        };
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(self.io(prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io(prefix, e))?;
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let name = entry.file_name();
                    if name.to_string_lossy().starts_with('.') {
                        continue;
                    }
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        match std::fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        assert_eq!(s.read("a/b.json").unwrap(), None);
        s.write("a/b.json", b"one").unwrap();
        s.write("a/b.json", b"two").unwrap();
        s.write("a/c/d.txt", b"x").unwrap();
        assert_eq!(s.read("a/b.json").unwrap().unwrap(), b"two");
        assert_eq!(s.list("a").unwrap(), vec!["a/b.json", "a/c/d.txt"]);
        s.delete("a/b.json").unwrap();
        assert_eq!(s.list("").unwrap(), vec!["a/c/d.txt"]);
    }

    #[test]
    fn rejects_escaping_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        assert!(matches!(
            s.write("../x", b""),
            Err(StorageError::InvalidKey(_))
        ));
    }
}

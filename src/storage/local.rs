use super::{ObjectInfo, Precondition, Result, Storage, StorageError};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// A lock older than this is left over from a crashed writer.
const STALE_LOCK: Duration = Duration::from_secs(600);

fn content_version(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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

    /// The object's path and a hidden sibling `.<name><suffix>` (which
    /// listings skip), with their folder created.
    fn with_sibling(&self, key: &str, suffix: &str) -> Result<(PathBuf, PathBuf)> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| self.io(key, e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let sibling = dir.join(format!(".{name}{suffix}"));
        Ok((path, sibling))
    }

    /// Writes through a temporary file in the target's folder, then renames.
    fn write_with(
        &self,
        key: &str,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<()> {
        let (path, tmp) = self.with_sibling(key, &format!(".tmp-{}", std::process::id()))?;
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            fill(&mut f)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(key, e));
        }
        Ok(())
    }

    /// The object's version ([`content_version`] of its bytes), hashed as
    /// it is read rather than held; `None` when it does not exist.
    fn version(&self, key: &str) -> Result<Option<String>> {
        let mut file = match std::fs::File::open(self.path(key)?) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(key, e)),
        };
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 1 << 20];
        loop {
            let n = file.read(&mut buffer).map_err(|e| self.io(key, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(Some(
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ))
    }

    /// Takes a lock file beside the object (another process holding it is a
    /// conflict) and checks the version: what a conditional write does
    /// before writing as [`Storage::write`] does.
    fn check_under_lock(&self, key: &str, condition: &Precondition) -> Result<LockFile> {
        let (_, lock_path) = self.with_sibling(key, ".lock")?;
        let stale = std::fs::metadata(&lock_path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_LOCK);
        if stale {
            let _ = std::fs::remove_file(&lock_path);
        }
        let lock = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)
        {
            Ok(_) => LockFile(lock_path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::Conflict {
                    location: self.url(key),
                })
            }
            Err(e) => return Err(self.io(key, e)),
        };
        let current = self.version(key)?;
        let holds = match condition {
            Precondition::Absent => current.is_none(),
            Precondition::Version(v) => current.as_deref() == Some(v.as_str()),
        };
        if !holds {
            return Err(StorageError::Conflict {
                location: self.url(key),
            });
        }
        Ok(lock)
    }
}

/// An exclusive lock file beside an object, removed on drop.
struct LockFile(PathBuf);

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
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

    fn read_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        Ok(self.read(key)?.map(|data| {
            let version = content_version(&data);
            (data, version)
        }))
    }

    fn reader(&self, key: &str) -> Result<Box<dyn std::io::Read + Send>> {
        let file = std::fs::File::open(self.path(key)?).map_err(|e| self.io(key, e))?;
        Ok(Box::new(std::io::BufReader::new(file)))
    }

    /// Writes to a temporary file in the same folder, syncs it, then renames
    /// it over the target, so a crash leaves either the old or the new file.
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.write_with(key, |f| f.write_all(data))
    }

    /// Takes a lock file beside the object (another process holding it is a
    /// conflict), checks the version, then writes as [`Storage::write`] does.
    fn write_if(&self, key: &str, data: &[u8], condition: &Precondition) -> Result<String> {
        let _lock = self.check_under_lock(key, condition)?;
        self.write(key, data)?;
        Ok(content_version(data))
    }

    fn put_file_if(&self, key: &str, source: &Path, condition: &Precondition) -> Result<String> {
        let _lock = self.check_under_lock(key, condition)?;
        self.put_file(key, source)?;
        Ok(self.version(key)?.unwrap_or_default())
    }

    fn put_file(&self, key: &str, source: &Path) -> Result<()> {
        self.write_with(key, |f| {
            let mut input = std::fs::File::open(source)?;
            std::io::copy(&mut input, f).map(|_| ())
        })
    }

    fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
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
                    continue;
                }
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let meta = entry.metadata().map_err(|e| self.io(prefix, e))?;
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .unwrap_or_default();
                out.push(ObjectInfo {
                    key: rel.to_string_lossy().replace('\\', "/"),
                    size: meta.len(),
                    version: format!("{}-{}", meta.len(), modified.as_nanos()),
                    modified_ms: i64::try_from(modified.as_millis()).unwrap_or(i64::MAX),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
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
    fn conditional_write_refuses_a_changed_object() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        s.write_if("state.json", b"one", &Precondition::Absent)
            .unwrap();
        assert!(matches!(
            s.write_if("state.json", b"again", &Precondition::Absent),
            Err(StorageError::Conflict { .. })
        ));
        let (_, version) = s.read_versioned("state.json").unwrap().unwrap();
        s.write("state.json", b"someone else").unwrap();
        assert!(matches!(
            s.write_if("state.json", b"mine", &Precondition::Version(version)),
            Err(StorageError::Conflict { .. })
        ));
        assert_eq!(s.read("state.json").unwrap().unwrap(), b"someone else");
        let (_, version) = s.read_versioned("state.json").unwrap().unwrap();
        let written = s
            .write_if("state.json", b"mine", &Precondition::Version(version))
            .unwrap();
        assert_eq!(s.read("state.json").unwrap().unwrap(), b"mine");
        let (_, read_back) = s.read_versioned("state.json").unwrap().unwrap();
        assert_eq!(written, read_back, "the returned version is the stored one");
        assert_eq!(
            s.list("").unwrap(),
            vec!["state.json"],
            "no lock left behind"
        );
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

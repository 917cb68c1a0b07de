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
        let lock = match LockFile::take(&lock_path) {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&lock_path).unwrap_or_default();
                if !owner_alive(&owner, &lock_path) {
                    // Left by a killed process: break it, once.
                    let _ = std::fs::remove_file(&lock_path);
                    LockFile::take(&lock_path).map_err(|e| self.io(key, e))?
                } else {
                    return Err(StorageError::Locked {
                        location: self.url(key),
                        lock: lock_path.display().to_string(),
                        owner: describe_owner(&owner),
                    });
                }
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

/// An exclusive lock file beside an object, removed on drop. It names its
/// owner (`pid host unix-seconds`), so a lock left by a killed process can
/// be told from one held by a running one.
struct LockFile(PathBuf);

impl LockFile {
    fn take(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        let since = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let lock = LockFile(path.to_path_buf());
        writeln!(file, "{} {} {since}", std::process::id(), host_name())?;
        Ok(lock)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Whether the owner a lock file names may still run: a process of this
/// host that exists, a lock of another host (it cannot be checked from
/// here) younger than [`STALE_LOCK`], or a lock being written this instant.
fn owner_alive(owner: &str, lock: &Path) -> bool {
    let mut parts = owner.split_whitespace();
    let (Some(pid), Some(host)) = (parts.next(), parts.next()) else {
        // Empty: just created, or written by an older version.
        return std::fs::metadata(lock)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < Duration::from_secs(5));
    };
    if host == host_name() {
        return Path::new("/proc").join(pid).exists();
    }
    std::fs::metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < STALE_LOCK)
}

/// The owner as a message shows it.
fn describe_owner(owner: &str) -> String {
    let parts: Vec<&str> = owner.split_whitespace().collect();
    match parts.as_slice() {
        [pid, host, since] => {
            let since = since
                .parse::<i64>()
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map_or_else(|| (*since).to_string(), |t| t.to_rfc3339());
            format!("process {pid} on {host} since {since}")
        }
        _ => "a process that did not say who it is".into(),
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Storage for LocalStorage {
    fn url(&self, key: &str) -> String {
        crate::files::display_path(&self.root.join(key))
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
        crate::files::crash_point("state-write-locked");
        self.put_file(key, source)?;
        Ok(self.version(key)?.unwrap_or_default())
    }

    fn put_file(&self, key: &str, source: &Path) -> Result<()> {
        self.write_with(key, |f| {
            let mut input = std::fs::File::open(source)?;
            std::io::copy(&mut input, f).map(|_| ())
        })
    }

    fn leftovers(&self, remove: bool) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(&dir.display().to_string(), e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let dead = if let Some((_, pid)) = name.rsplit_once(".tmp-") {
                    name.starts_with('.') && !Path::new("/proc").join(pid).exists()
                } else if name.starts_with('.') && name.ends_with(".lock") {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    !owner_alive(&owner, &path)
                } else {
                    false
                };
                if dead {
                    if remove {
                        std::fs::remove_file(&path)
                            .map_err(|e| self.io(&path.display().to_string(), e))?;
                    }
                    found.push(path.display().to_string());
                }
            }
        }
        found.sort();
        Ok(found)
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

    /// Removes the file, then the folders it leaves empty (up to the
    /// root), as an object store has no empty folders.
    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io(key, e)),
        }
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(&self.root) && *d != self.root) {
            // Fails (and stops) at the first folder that is not empty.
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_of_a_dead_process_is_broken_and_a_live_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        s.write("state/alerts.json", b"{}").unwrap();
        let version = s.version("state/alerts.json").unwrap().unwrap();
        let lock = dir.path().join("state/.alerts.json.lock");
        // As kill -9 leaves it: a pid that does not run on this host.
        std::fs::write(&lock, format!("4194399 {} 1700000000\n", host_name())).unwrap();
        s.write_if(
            "state/alerts.json",
            b"{\"a\":1}",
            &Precondition::Version(version),
        )
        .unwrap();
        assert!(!lock.exists(), "released after the write");
        // Held by a process that runs (this one).
        std::fs::write(
            &lock,
            format!("{} {} 1700000000\n", std::process::id(), host_name()),
        )
        .unwrap();
        let version = s.version("state/alerts.json").unwrap().unwrap();
        let e = s
            .write_if("state/alerts.json", b"{}", &Precondition::Version(version))
            .unwrap_err();
        let message = e.to_string();
        assert!(matches!(e, StorageError::Locked { .. }), "{message}");
        assert!(
            message.contains(".alerts.json.lock is held by process"),
            "{message}"
        );
        assert!(message.contains("delete"), "{message}");
        assert!(lock.exists(), "a live owner's lock is kept");
    }

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

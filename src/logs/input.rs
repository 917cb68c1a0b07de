//! Inputs of a run: local files and folders, and objects under S3 prefixes.
//!
//! Objects are fetched ahead, [`PREFETCH`] at a time on their own threads,
//! while earlier inputs are decoded, so S3 latency overlaps with detection
//! work; inputs are still decoded in order, so sources and alert order are
//! the same as for the same files on disk. Objects above [`STREAM_ABOVE`]
//! bytes are streamed rather than held whole.

use super::{EventReader, Framed, LogError, ReadItem, Undecoded};
use crate::files::display_path;
use crate::storage::{AwsSettings, S3Storage, Storage, StorageError};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Objects fetched ahead of the one being decoded.
pub const PREFETCH: usize = 8;
/// Objects larger than this are streamed instead of fetched whole.
pub const STREAM_ABOVE: u64 = 64 * 1024 * 1024;

/// One input of a run.
#[derive(Debug, Clone)]
pub enum Input {
    File(PathBuf),
    /// Standard input (`--input -`): `zcat *.gz | ravenwatch run --input -`.
    Stdin,
    Object {
        storage: Arc<dyn Storage>,
        key: String,
        size: u64,
        /// Changes whenever the content does (the S3 ETag).
        version: String,
        /// Last modification, epoch milliseconds.
        modified_ms: i64,
    },
}

impl Input {
    /// The name shown in sources and messages.
    pub fn name(&self) -> String {
        match self {
            Input::File(path) => display_path(path),
            Input::Stdin => STDIN_NAME.into(),
            Input::Object { storage, key, .. } => storage.url(key),
        }
    }

    /// Where it is and a cheap stamp of its state, for the input ledger:
    /// an S3 object's URL and ETag; a local file's absolute path and
    /// `size:mtime`. `None` for standard input and named pipes, which have
    /// nothing to recognise later.
    pub fn stamp(&self) -> Option<(String, String)> {
        match self {
            Input::Stdin => None,
            Input::Object {
                storage,
                key,
                version,
                ..
            } => Some((storage.url(key), version.clone())),
            Input::File(path) => {
                let meta = std::fs::metadata(path)
                    .ok()
                    .filter(std::fs::Metadata::is_file)?;
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                let modified = self.modified_ms().unwrap_or(0);
                Some((
                    absolute.display().to_string(),
                    format!("{}:{modified}", meta.len()),
                ))
            }
        }
    }

    /// What it holds, for the input ledger: an S3 object's ETag; a local
    /// file's `size:blake3` of its bytes (a copy or a touch keeps it, any
    /// change of content makes it new). Reads a local file whole.
    ///
    /// # Errors
    /// A local file that cannot be read.
    pub fn content_version(&self) -> Result<String, LogError> {
        match self {
            Input::Stdin => Ok(String::new()),
            Input::Object { version, .. } => Ok(version.clone()),
            Input::File(path) => {
                let failed = |e: std::io::Error| LogError::Input {
                    path: display_path(path),
                    message: e.to_string(),
                };
                // BLAKE3: a content hash at several GB/s, so identifying
                // an input costs a small fraction of reading it.
                let mut hasher = blake3::Hasher::new();
                let mut file = std::fs::File::open(path).map_err(failed)?;
                let mut buffer = vec![0u8; 1 << 20];
                let mut size = 0u64;
                loop {
                    let n = std::io::Read::read(&mut file, &mut buffer).map_err(failed)?;
                    if n == 0 {
                        break;
                    }
                    size += n as u64;
                    hasher.update(&buffer[..n]);
                }
                Ok(format!("{size}:{}", hasher.finalize().to_hex()))
            }
        }
    }

    /// When it was last written, epoch milliseconds (`None` for standard
    /// input or an unreadable file).
    pub fn modified_ms(&self) -> Option<i64> {
        match self {
            Input::Stdin => None,
            Input::Object { modified_ms, .. } => Some(*modified_ms),
            Input::File(path) => std::fs::metadata(path)
                .ok()?
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|d| i64::try_from(d.as_millis()).ok()),
        }
    }

    /// Its size in bytes as stored (compressed), when known before reading.
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::File(path) => std::fs::metadata(path).ok().map(|m| m.len()),
            Input::Stdin => None,
            Input::Object { size, .. } => Some(*size),
        }
    }
}

/// How standard input is named in sources (`stdin:12`) and messages.
pub const STDIN_NAME: &str = "stdin";

pub(super) fn is_hidden(name: &str) -> bool {
    name.rsplit('/').next().is_some_and(|n| n.starts_with('.'))
}

/// Expands files, folders (recursively, sorted, skipping hidden files),
/// `s3://bucket/prefix` URLs (every object under the prefix, or the object
/// itself) and `-` (standard input) into inputs.
///
/// # Errors
/// A local path that does not exist, an S3 prefix with no objects, or an S3
/// failure (unreachable endpoint, missing bucket, denied access).
pub fn expand_inputs(paths: &[String], aws: &AwsSettings) -> Result<Vec<Input>, LogError> {
    let mut inputs = Vec::new();
    let objects = S3Objects::new(paths, aws)?;
    for p in paths {
        if p == "-" {
            if inputs.iter().any(|i| matches!(i, Input::Stdin)) {
                return Err(LogError::Input {
                    path: p.clone(),
                    message: "standard input can be read only once".into(),
                });
            }
            inputs.push(Input::Stdin);
            continue;
        }
        if p.starts_with("s3://") {
            match objects.get(p) {
                Some(object) => inputs.push(object),
                None => inputs.extend(expand_s3_prefix(p, aws)?),
            }
            continue;
        }
        let path = PathBuf::from(p);
        if path.is_dir() {
            let mut found = Vec::new();
            let mut stack = vec![path.clone()];
            while let Some(dir) = stack.pop() {
                let entries = std::fs::read_dir(&dir).map_err(|e| LogError::Input {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                })?;
                for entry in entries.flatten() {
                    let child = entry.path();
                    if entry.file_name().to_string_lossy().starts_with('.') {
                        continue;
                    }
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    if child.is_dir() {
                        stack.push(child);
                    } else if kind.is_file() || (kind.is_symlink() && child.is_file()) {
                        found.push(child);
                    } else {
                        // A named pipe or socket would block the run forever.
                        eprintln!(
                            "warning: {}: skipped, not a regular file (a named pipe, socket or device); give it as an input by itself to read it",
                            child.display()
                        );
                    }
                }
            }
            if found.is_empty() {
                return Err(LogError::EmptyFolder { path: p.clone() });
            }
            found.sort();
            inputs.extend(found.into_iter().map(Input::File));
        } else if path.exists() {
            // A file, or a named pipe that a producer writes into.
            inputs.push(Input::File(path));
        } else {
            return Err(LogError::MissingInput { path: p.clone() });
        }
    }
    Ok(inputs)
}

/// The objects that `s3://` URLs name exactly (what notifications name):
/// one HEAD each, 16 at a time, one client per bucket. A URL ending in
/// `/`, or naming no object, is a prefix and is listed instead.
struct S3Objects {
    found: std::collections::HashMap<String, Input>,
}

impl S3Objects {
    fn new(paths: &[String], aws: &AwsSettings) -> Result<Self, LogError> {
        let mut buckets: std::collections::HashMap<String, Arc<dyn Storage>> =
            std::collections::HashMap::new();
        let mut asked = Vec::new();
        for url in paths.iter().filter(|p| p.starts_with("s3://")) {
            let (bucket, key) = crate::storage::parse_s3_url(url)?;
            if key.is_empty() || url.ends_with('/') {
                continue;
            }
            let root = match buckets.get(&bucket) {
                Some(root) => Arc::clone(root),
                None => {
                    let root: Arc<dyn Storage> =
                        Arc::new(S3Storage::open(&format!("s3://{bucket}"), aws)?);
                    buckets.insert(bucket, Arc::clone(&root));
                    root
                }
            };
            asked.push((url.clone(), root, key));
        }
        let heads = crate::storage::in_parallel(&asked, 16, |(_, root, key)| root.info(key))?;
        let found = asked
            .into_iter()
            .zip(heads)
            .filter_map(|((url, storage, _), info)| {
                let o = info?;
                let input = Input::Object {
                    storage,
                    key: o.key,
                    size: o.size,
                    version: o.version,
                    modified_ms: o.modified_ms,
                };
                Some((url, input))
            })
            .collect();
        Ok(Self { found })
    }

    /// The object `url` names, if it names one (a URL given twice is read
    /// twice, as a file named twice is).
    fn get(&self, url: &str) -> Option<Input> {
        self.found.get(url).cloned()
    }
}

/// Every object under the prefix `url`.
fn expand_s3_prefix(url: &str, aws: &AwsSettings) -> Result<Vec<Input>, LogError> {
    let storage: Arc<dyn Storage> = Arc::new(S3Storage::open(url, aws)?);
    let objects = storage.list_info("")?;
    if objects.is_empty() {
        return Err(LogError::MissingInput {
            path: url.to_string(),
        });
    }
    Ok(objects
        .into_iter()
        .filter(|o| !is_hidden(&o.key))
        .map(|o| Input::Object {
            storage: Arc::clone(&storage),
            key: o.key,
            size: o.size,
            version: o.version,
            modified_ms: o.modified_ms,
        })
        .collect())
}

type Fetch = JoinHandle<Result<Vec<u8>, StorageError>>;

fn start_fetch(input: &Input) -> Option<Fetch> {
    match input {
        Input::Object {
            storage, key, size, ..
        } if *size <= STREAM_ABOVE => {
            let storage = Arc::clone(storage);
            let key = key.clone();
            Some(std::thread::spawn(move || {
                storage.read(&key)?.ok_or_else(|| StorageError::S3 {
                    location: storage.url(&key),
                    operation: "GetObject",
                    code: "NoSuchKey".into(),
                    message: "the object disappeared after it was listed".into(),
                })
            }))
        }
        _ => None,
    }
}

/// Reads every input in order into `sink`, fetching S3 objects ahead.
/// Stops after a [`ReadItem::Fatal`] or when `sink` returns false.
pub fn read_inputs(
    reader: &EventReader,
    inputs: Vec<Input>,
    sink: &mut dyn FnMut(ReadItem) -> bool,
) {
    frame_inputs(reader, inputs, &mut |framed| match framed {
        Framed::Chunk(chunk) => reader.decode(chunk).into_iter().all(&mut *sink),
        Framed::Ready(item) => sink(item),
    });
}

/// [`read_inputs`] with the decoding on `decoders` threads: one thread
/// frames the inputs into chunks, the decoders decode chunks as they come,
/// and `sink` gets every item on the calling thread in input order, as
/// [`read_inputs`] would give them. Returns how many inputs were read to
/// their end (fewer than given when the reader was told to stop).
pub fn read_inputs_parallel(
    reader: Arc<EventReader>,
    inputs: Vec<Input>,
    decoders: usize,
    sink: &mut dyn FnMut(ReadItem) -> bool,
) -> usize {
    use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
    /// The framing thread's output, in input order.
    enum InOrder {
        Decoding(Receiver<Vec<ReadItem>>),
        Ready(ReadItem),
    }
    let decoders = decoders.max(1);
    // Chunks in flight are bounded by this channel's depth.
    let (framed_tx, framed_rx) = sync_channel::<InOrder>(decoders);
    let (jobs_tx, jobs_rx) = channel::<(Undecoded, SyncSender<Vec<ReadItem>>)>();
    let jobs_rx = Arc::new(std::sync::Mutex::new(jobs_rx));
    let threads: Vec<JoinHandle<()>> = (0..decoders)
        .map(|_| {
            let jobs = Arc::clone(&jobs_rx);
            let reader = Arc::clone(&reader);
            std::thread::spawn(move || loop {
                let job = match jobs.lock() {
                    Ok(jobs) => jobs.recv(),
                    Err(_) => return,
                };
                let Ok((chunk, done)) = job else { return };
                // The taker may have stopped: the items are dropped then.
                let _ = done.send(reader.decode(chunk));
            })
        })
        .collect();
    let framer = Arc::clone(&reader);
    let framing = std::thread::spawn(move || {
        frame_inputs(&framer, inputs, &mut |framed| {
            let next = match framed {
                Framed::Chunk(chunk) => {
                    let (done, result) = sync_channel(1);
                    if jobs_tx.send((chunk, done)).is_err() {
                        return false;
                    }
                    InOrder::Decoding(result)
                }
                Framed::Ready(item) => InOrder::Ready(item),
            };
            framed_tx.send(next).is_ok()
        })
    });
    'taking: for next in &framed_rx {
        let items = match next {
            InOrder::Ready(item) => vec![item],
            InOrder::Decoding(result) => result.recv().unwrap_or_else(|_| {
                vec![ReadItem::Fatal(StorageError::Config(
                    "a decoding thread stopped (likely a bug)".into(),
                ))]
            }),
        };
        for item in items {
            if !sink(item) {
                break 'taking;
            }
        }
    }
    // Stops the framer at its next chunk; the decoders end with it.
    drop(framed_rx);
    let read = framing.join().unwrap_or(0);
    for thread in threads {
        let _ = thread.join();
    }
    read
}

/// [`read_inputs`], leaving chunks of events undecoded (the run decodes
/// them on several threads). Returns how many inputs were read to their
/// end; none is started once the reader is told to stop.
pub fn frame_inputs(
    reader: &EventReader,
    inputs: Vec<Input>,
    sink: &mut dyn FnMut(Framed) -> bool,
) -> usize {
    let mut read = 0;
    let mut pending: VecDeque<(Input, Option<Fetch>)> = VecDeque::new();
    let mut rest = inputs.into_iter();
    let open = std::cell::Cell::new(true);
    let mut forward = |item: Framed| {
        if open.get() {
            open.set(sink(item));
        }
    };
    loop {
        while pending.len() <= PREFETCH {
            let Some(input) = rest.next() else { break };
            let fetch = start_fetch(&input);
            pending.push_back((input, fetch));
        }
        if reader.stop_requested() {
            break;
        }
        let Some((input, fetch)) = pending.pop_front() else {
            break;
        };
        let fatal = match (&input, fetch) {
            (Input::File(path), _) => {
                reader.frame_file(path, &mut forward);
                None
            }
            (Input::Stdin, _) => {
                reader.frame_stdin(&mut forward);
                None
            }
            (Input::Object { .. }, Some(fetch)) => match fetch.join() {
                Ok(Ok(bytes)) => {
                    reader.frame_stream(
                        &input.name(),
                        Box::new(std::io::Cursor::new(bytes)),
                        &mut forward,
                    );
                    None
                }
                Ok(Err(e)) => Some(e),
                Err(_) => Some(StorageError::Config(format!(
                    "{}: the fetch thread panicked (likely a bug)",
                    input.name()
                ))),
            },
            (Input::Object { storage, key, .. }, None) => match storage.reader(key) {
                Ok(stream) => {
                    reader.frame_stream(&input.name(), stream, &mut forward);
                    None
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = fatal {
            forward(Framed::Ready(ReadItem::Fatal(e)));
            break;
        }
        if !open.get() {
            break;
        }
        read += 1;
    }
    // Let in-flight fetches finish; their results are dropped.
    for (_, fetch) in pending {
        if let Some(f) = fetch {
            let _ = f.join();
        }
    }
    read
}

//! What `run --follow` lists each poll: over S3, what is new, not
//! everything ever written.
//!
//! Log producers write date-ordered keys below per-source folders —
//! CloudTrail `AWSLogs/<account>/CloudTrail/<region>/2026/12/03/…`,
//! Firehose `<prefix>/2026/12/03/10/…`. One start-after cursor over the
//! whole prefix would skip objects: the keys of different accounts and
//! regions interleave, so a new object of the first account sorts before
//! the newest of the last. So a prefix is split into *partitions*: the
//! folders where dated folders begin, found by walking the folders above
//! them with delimited listings (at the start, then every `discover`
//! period, for new accounts and regions). Each partition has its own
//! start-after cursor, and a cursor passes only objects that are both in
//! the input ledger and older than `lookback`: a producer dates its keys
//! when it writes them, so no key written later sorts below one written
//! `lookback` earlier, and nothing is skipped. Objects inside the lookback
//! are listed again each poll and the ledger skips them. Objects lying
//! directly in a folder without dated folders are listed whole each poll:
//! nothing bounds where a new key sorts among them; so are dated folders
//! whose date parts lack leading zeros (`month=9` sorts after `month=10`).

use super::input::is_hidden;
use super::{expand_inputs, Input, LogError};
use crate::storage::{AwsSettings, S3Storage, Storage};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How deep the walk looks for dated folders below a prefix; deeper
/// folders are listed whole.
const MAX_DEPTH: usize = 8;

/// Start-after cursors by partition (`s3://bucket/folder` → key).
pub type Cursors = BTreeMap<String, String>;

/// What one poll cost: listing requests and objects listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollCost {
    pub partitions: usize,
    pub requests: u32,
    pub objects: usize,
}

/// A folder listed as one unit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Partition {
    folder: String,
    /// Dated folders start below it: its keys are date-ordered, so it
    /// has a cursor.
    dated: bool,
    /// Only the objects directly in it (its folders are partitions of
    /// their own).
    flat: bool,
}

/// An object of a dated partition as listed.
#[derive(Debug)]
struct Listed {
    key: String,
    name: String,
    modified_ms: i64,
}

/// A followed S3 prefix.
#[derive(Debug)]
struct Root {
    /// The bucket; keys are full keys.
    storage: Arc<dyn Storage>,
    folder: String,
    partitions: Vec<Partition>,
}

/// The listing side of `run --follow`: S3 prefixes through per-partition
/// cursors, local paths (and single objects) expanded whole.
#[derive(Debug)]
pub struct Follower {
    roots: Vec<Root>,
    whole: Vec<String>,
    aws: AwsSettings,
    lookback: Duration,
    discover: Duration,
    discovered: Option<Instant>,
    cursors: Cursors,
    /// Dated partitions' objects listed by the last poll (key, input
    /// name, written ms), to move their cursors once the ledger says what
    /// is processed.
    listed: Vec<(String, Vec<Listed>)>,
    cost: PollCost,
}

impl Follower {
    /// Follows `paths` (S3 prefixes, local files and folders), continuing
    /// from `cursors` a previous follower left.
    ///
    /// # Errors
    /// A malformed S3 URL, or a failure to look at one.
    pub fn new(
        paths: &[String],
        aws: &AwsSettings,
        (lookback, discover): (Duration, Duration),
        cursors: Cursors,
    ) -> Result<Self, LogError> {
        let mut roots = Vec::new();
        let mut whole = Vec::new();
        for path in paths {
            match s3_root(path, aws)? {
                Some(root) => roots.push(root),
                None => whole.push(path.clone()),
            }
        }
        Ok(Self {
            roots,
            whole,
            aws: aws.clone(),
            lookback,
            discover,
            discovered: None,
            cursors,
            listed: Vec::new(),
            cost: PollCost::default(),
        })
    }

    /// The inputs there are now: every object of the S3 partitions past
    /// their cursors, every local file. Walks the prefixes again when the
    /// discover period has passed.
    ///
    /// # Errors
    /// A listing that fails, a local path that does not exist.
    pub fn list(&mut self) -> Result<Vec<Input>, LogError> {
        let mut cost = PollCost::default();
        if self
            .discovered
            .is_none_or(|at| at.elapsed() >= self.discover)
        {
            for root in &mut self.roots {
                let (partitions, requests) = discover(root.storage.as_ref(), &root.folder)?;
                root.partitions = partitions;
                cost.requests += requests;
            }
            self.discovered = Some(Instant::now());
        }
        let mut inputs = Vec::new();
        for path in &self.whole {
            match expand_inputs(std::slice::from_ref(path), &self.aws) {
                Ok(found) => inputs.extend(found),
                // A watched folder may be empty until the first file lands.
                Err(LogError::EmptyFolder { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.listed.clear();
        for root in &mut self.roots {
            for partition in &mut root.partitions {
                let url = root.storage.url(&partition.folder);
                let after = self
                    .cursors
                    .get(&url)
                    .filter(|_| partition.dated)
                    .map(String::as_str);
                let listing = root
                    .storage
                    .list_after(&partition.folder, after, partition.flat)?;
                cost.partitions += 1;
                cost.requests += listing.requests;
                cost.objects += listing.objects.len();
                let start = partition.folder.len();
                let below = |key: &String| unpadded(key.get(start..).unwrap_or_default());
                if partition.dated && listing.objects.iter().any(|o| below(&o.key)) {
                    // `month=9` sorts after `month=10`: not date-ordered,
                    // so no cursor (the listing is whole from now on).
                    partition.dated = false;
                    self.cursors.remove(&url);
                }
                let objects = listing.objects.into_iter().filter(|o| !is_hidden(&o.key));
                let mut seen = Vec::new();
                for o in objects {
                    if partition.dated {
                        seen.push(Listed {
                            key: o.key.clone(),
                            name: root.storage.url(&o.key),
                            modified_ms: o.modified_ms,
                        });
                    }
                    inputs.push(Input::Object {
                        storage: Arc::clone(&root.storage),
                        key: o.key,
                        size: o.size,
                        version: o.version,
                        modified_ms: o.modified_ms,
                    });
                }
                if partition.dated {
                    self.listed.push((url, seen));
                }
            }
        }
        self.cost = cost;
        Ok(inputs)
    }

    /// Moves each dated partition's cursor past the objects the last
    /// [`Follower::list`] returned that are processed (not in `pending`,
    /// by input name) and older than the lookback at `now_ms`, up to the
    /// first pending one. Whether a cursor moved.
    pub fn advance(&mut self, pending: &HashSet<String>, now_ms: i64) -> bool {
        let lookback = i64::try_from(self.lookback.as_millis()).unwrap_or(i64::MAX);
        let old_enough = now_ms.saturating_sub(lookback);
        let mut moved = false;
        for (url, objects) in &self.listed {
            let mut cursor = None;
            for object in objects {
                if pending.contains(&object.name) {
                    break;
                }
                if object.modified_ms <= old_enough {
                    cursor = Some(&object.key);
                }
            }
            if let Some(key) = cursor {
                if self.cursors.get(url).is_none_or(|old| old < key) {
                    self.cursors.insert(url.clone(), key.clone());
                    moved = true;
                }
            }
        }
        moved
    }

    /// The cursors, to keep for the next follower.
    pub fn cursors(&self) -> &Cursors {
        &self.cursors
    }

    /// What the last poll cost.
    pub fn cost(&self) -> PollCost {
        self.cost
    }
}

/// The bucket and folder of an S3 prefix to follow; `None` for local
/// paths and for a URL naming one object (expanded whole each poll).
fn s3_root(path: &str, aws: &AwsSettings) -> Result<Option<Root>, LogError> {
    if !path.starts_with("s3://") {
        return Ok(None);
    }
    let (bucket, key) = crate::storage::parse_s3_url(path)?;
    let storage: Arc<dyn Storage> = Arc::new(S3Storage::open(&format!("s3://{bucket}"), aws)?);
    if !key.is_empty() && !path.ends_with('/') && storage.info(&key)?.is_some() {
        return Ok(None);
    }
    Ok(Some(Root {
        storage,
        folder: key.trim_end_matches('/').to_string(),
        partitions: Vec::new(),
    }))
}

/// The partitions below `root`, and the listing requests the walk took.
fn discover(storage: &dyn Storage, root: &str) -> Result<(Vec<Partition>, u32), LogError> {
    let mut partitions = Vec::new();
    let mut requests = 0;
    if root.split('/').any(starts_dates) {
        let whole = Partition {
            folder: root.to_string(),
            dated: true,
            flat: false,
        };
        return Ok((vec![whole], 0));
    }
    let mut stack = vec![(root.to_string(), 0)];
    while let Some((folder, depth)) = stack.pop() {
        let level = storage.list_after(&folder, None, true)?;
        requests += level.requests;
        let dated = level
            .folders
            .iter()
            .any(|f| starts_dates(f.rsplit('/').next().unwrap_or(f)));
        if dated || depth >= MAX_DEPTH {
            partitions.push(Partition {
                folder,
                dated,
                flat: false,
            });
            continue;
        }
        if !level.objects.is_empty() {
            partitions.push(Partition {
                folder: folder.clone(),
                dated: false,
                flat: true,
            });
        }
        stack.extend(level.folders.into_iter().map(|f| (f, depth + 1)));
    }
    partitions.sort();
    Ok((partitions, requests))
}

/// Whether a key below a dated folder has a date part written without
/// its leading zero (`month=9`, `2026/9/3/`): such keys do not sort by
/// date.
fn unpadded(rest: &str) -> bool {
    let mut folders: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    folders.pop(); // the object's own name
    folders.iter().any(|folder| {
        let value = folder.split_once('=').map_or(*folder, |(_, v)| v);
        value.len() == 1 && value.as_bytes()[0].is_ascii_digit()
    })
}

/// Whether a folder name is where a date path begins: a year (`2026`), a
/// date (`2026-12-03`, `20261203`), or a Hive-style date key (`dt=…`,
/// `date=…`, `year=…`, `day=…`).
fn starts_dates(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((key, value)) = name.split_once('=') {
        let key = key.to_ascii_lowercase();
        return matches!(key.as_str(), "dt" | "date" | "year" | "day" | "ds")
            && value.bytes().next().is_some_and(|b| b.is_ascii_digit());
    }
    let year = |s: &str| digits(s) && s.len() == 4 && ("1970".."2200").contains(&s);
    match name.len() {
        4 => year(name),
        8 => digits(name) && year(&name[..4]) && ("01".."13").contains(&&name[4..6]),
        10 => {
            let b = name.as_bytes();
            year(&name[..4])
                && b[4] == b'-'
                && b[7] == b'-'
                && digits(&name[5..7])
                && digits(&name[8..])
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    #[test]
    fn date_folders_are_recognised_and_account_ids_are_not() {
        for dated in [
            "2026",
            "2026-12-03",
            "20261203",
            "dt=2026-12-03",
            "year=2026",
        ] {
            assert!(starts_dates(dated), "{dated}");
        }
        for plain in [
            "123456789012",
            "us-east-1",
            "CloudTrail",
            "12",
            "9999",
            "region=us-east-1",
            "20261303",
        ] {
            assert!(!starts_dates(plain), "{plain}");
        }
    }

    fn put(storage: &LocalStorage, keys: &[&str]) {
        for key in keys {
            storage.write(key, b"{}\n").unwrap();
        }
    }

    fn trail(account: &str, day: &str, n: u32) -> String {
        format!("AWSLogs/{account}/CloudTrail/us-east-1/2026/12/{day}/{account}_CloudTrail_us-east-1_202612{day}T{n:04}Z.json")
    }

    #[test]
    fn the_walk_stops_where_dated_folders_begin() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        put(
            &storage,
            &[
                &trail("111111111111", "01", 1),
                &trail("222222222222", "01", 1),
                "AWSLogs/readme.txt",
                "AWSLogs/flat/a.json",
            ],
        );
        let (partitions, requests) = discover(&storage, "AWSLogs").unwrap();
        let folders: Vec<_> = partitions
            .iter()
            .map(|p| (p.folder.as_str(), p.dated, p.flat))
            .collect();
        assert_eq!(
            folders,
            [
                ("AWSLogs", false, true),
                ("AWSLogs/111111111111/CloudTrail/us-east-1", true, false),
                ("AWSLogs/222222222222/CloudTrail/us-east-1", true, false),
                ("AWSLogs/flat", false, true),
            ]
        );
        assert_eq!(
            requests, 8,
            "one delimited listing per folder above the dates"
        );
        // A prefix already inside the dates is one partition, no walk.
        let (inside, requests) = discover(
            &storage,
            "AWSLogs/111111111111/CloudTrail/us-east-1/2026/12",
        )
        .unwrap();
        assert_eq!(inside.len(), 1);
        assert!(inside[0].dated && requests == 0);
    }

    /// A follower over local storage standing in for a bucket (the listing
    /// semantics are the trait's; S3's own are tested on SeaweedFS).
    fn follower(storage: &Arc<LocalStorage>, lookback: Duration) -> Follower {
        let bucket: Arc<dyn Storage> = Arc::clone(storage) as Arc<dyn Storage>;
        Follower {
            roots: vec![Root {
                storage: bucket,
                folder: "AWSLogs".into(),
                partitions: Vec::new(),
            }],
            whole: Vec::new(),
            aws: AwsSettings::default(),
            lookback,
            discover: Duration::from_secs(3600),
            discovered: None,
            cursors: Cursors::new(),
            listed: Vec::new(),
            cost: PollCost::default(),
        }
    }

    fn names(inputs: &[Input]) -> HashSet<String> {
        inputs.iter().map(Input::name).collect()
    }

    #[test]
    fn cursors_pass_only_processed_objects_and_a_late_key_of_an_earlier_account_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::new(dir.path()));
        let (a, b) = ("111111111111", "222222222222");
        put(
            &storage,
            &[&trail(a, "01", 1), &trail(a, "01", 2), &trail(b, "01", 1)],
        );
        let mut f = follower(&storage, Duration::ZERO);
        let first = f.list().unwrap();
        assert_eq!(first.len(), 3);
        // Nothing processed yet: no cursor moves.
        assert!(!f.advance(&names(&first), i64::MAX));
        // Processed except b's: a's cursor moves to its last key, b's not.
        let pending: HashSet<String> = names(&first)
            .into_iter()
            .filter(|n| n.contains(b))
            .collect();
        assert!(f.advance(&pending, i64::MAX));
        let second = f.list().unwrap();
        assert_eq!(
            names(&second),
            pending,
            "a's processed objects are not listed again"
        );
        assert_eq!(f.cost().objects, 1);
        // A new object of account a sorts before b's newest: still seen.
        put(&storage, &[&trail(a, "02", 1)]);
        let third = f.list().unwrap();
        assert!(names(&third)
            .iter()
            .any(|n| n.ends_with(&trail(a, "02", 1))));
        assert_eq!(third.len(), 2);
    }

    #[test]
    fn date_parts_without_leading_zeros_get_no_cursor() {
        assert!(unpadded("/year=2026/month=9/day=30/a.json"));
        assert!(unpadded("/2026/1/03/a.json"));
        assert!(!unpadded("/year=2026/month=09/day=30/a.json"));
        assert!(
            !unpadded("/2026/12/03/1.json"),
            "the object's own name does not count"
        );
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::new(dir.path()));
        put(
            &storage,
            &[
                "AWSLogs/app/year=2026/month=9/a.json",
                "AWSLogs/app/year=2026/month=10/b.json",
            ],
        );
        let mut f = follower(&storage, Duration::ZERO);
        assert_eq!(f.list().unwrap().len(), 2);
        assert!(!f.advance(&HashSet::new(), i64::MAX), "no cursor to move");
        // September's key sorts after October's: both stay listed.
        assert_eq!(f.list().unwrap().len(), 2);
        assert!(f.cursors().is_empty());
    }

    #[test]
    fn objects_inside_the_lookback_stay_listed_and_flat_folders_are_listed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::new(dir.path()));
        let a = "111111111111";
        put(&storage, &[&trail(a, "01", 1), "AWSLogs/flat/x.json"]);
        let mut f = follower(&storage, Duration::from_secs(3600));
        let listed = f.list().unwrap();
        assert_eq!(listed.len(), 2);
        let now = chrono::Utc::now().timestamp_millis();
        assert!(
            !f.advance(&HashSet::new(), now),
            "written just now: inside the lookback"
        );
        assert!(f.advance(&HashSet::new(), now + 3_700_000));
        let later = f.list().unwrap();
        assert_eq!(
            names(&later).into_iter().collect::<Vec<_>>(),
            [storage.url("AWSLogs/flat/x.json")],
            "the flat folder has no cursor"
        );
    }
}

//! MaxMind DB (GeoIP) tables (`format: mmdb`).
//!
//! An MMDB file is already a compact IP-prefix index, so it is kept as it is
//! rather than exploded into rows: its bytes travel as a one-row binary
//! Parquet snapshot (so sync, uploads, snapshots and the `current.json`
//! switch work as for every other table), and lookups walk the database's
//! own search tree through the `maxminddb` crate.

use arrow::array::{Array, BinaryArray, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The one column of an MMDB snapshot.
pub const MMDB_COLUMN: &str = "mmdb";

/// The Arrow schema of an MMDB snapshot: one binary column.
pub fn mmdb_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        MMDB_COLUMN,
        DataType::Binary,
        false,
    )]))
}

/// Database bytes shared with the Arrow batch (no copy).
struct Blob(Buffer);

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// An opened MaxMind DB.
pub struct GeoDb {
    reader: maxminddb::Reader<Blob>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.reader.metadata();
        f.debug_struct("GeoDb")
            .field("database_type", &m.database_type)
            .field("node_count", &m.node_count)
            .finish()
    }
}

/// Checks that `bytes` hold a well-formed MaxMind DB (metadata, search tree
/// and data section), and wraps them as a snapshot batch.
///
/// # Errors
/// What is wrong with the file, in the crate's words.
pub fn mmdb_batch(bytes: Vec<u8>) -> Result<RecordBatch, String> {
    let reader = maxminddb::Reader::from_source(bytes.as_slice())
        .map_err(|e| format!("not a MaxMind DB file: {e}"))?;
    reader
        .verify()
        .map_err(|e| format!("corrupt MaxMind DB: {e}"))?;
    let array = BinaryArray::from_vec(vec![bytes.as_slice()]);
    RecordBatch::try_new(mmdb_schema(), vec![Arc::new(array)])
        .map_err(|e| format!("internal error (likely a bug): {e}"))
}

impl GeoDb {
    /// Opens the database held by an MMDB snapshot batch.
    ///
    /// # Errors
    /// A batch that does not hold exactly one database, or a bad database.
    pub fn from_batch(batch: &RecordBatch) -> Result<Self, String> {
        let column = batch
            .column_by_name(MMDB_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
            .filter(|c| c.len() == 1 && !c.is_null(0))
            .ok_or("the snapshot does not hold one MaxMind DB")?;
        let offsets = column.value_offsets();
        let (start, end) = (offsets[0] as usize, offsets[1] as usize);
        let bytes = column.values().slice_with_length(start, end - start);
        let reader = maxminddb::Reader::from_source(Blob(bytes))
            .map_err(|e| format!("not a MaxMind DB file: {e}"))?;
        Ok(Self { reader })
    }

    /// The record of the most specific network containing `ip` (text), as
    /// JSON; `None` for no network, or a key that is not an IP address.
    ///
    /// # Errors
    /// A record that does not decode (a corrupt data section).
    pub fn lookup(&self, ip: &str) -> Result<Option<Value>, String> {
        match self.walk(ip) {
            Some((_, result)) => decode(ip, &result),
            None => Ok(None),
        }
    }

    /// [`GeoDb::lookup`] that decodes each record once: records are shared
    /// by many networks, so `cache` (by data-section offset) serves every
    /// later address in the same record.
    ///
    /// # Errors
    /// As [`GeoDb::lookup`].
    pub fn lookup_shared(
        &self,
        ip: &str,
        cache: &mut HashMap<usize, Arc<Value>>,
    ) -> Result<Option<Arc<Value>>, String> {
        let Some((offset, result)) = self.walk(ip) else {
            return Ok(None);
        };
        if let Some(record) = cache.get(&offset) {
            return Ok(Some(Arc::clone(record)));
        }
        let Some(record) = decode(ip, &result)? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        cache.insert(offset, Arc::clone(&record));
        Ok(Some(record))
    }

    /// The search-tree walk for `ip`: the record's data-section offset and
    /// the result to decode it from; `None` when no network holds data.
    fn walk(&self, ip: &str) -> Option<(usize, maxminddb::LookupResult<'_, Blob>)> {
        let result = self.reader.lookup(self.address(ip)?).ok()?;
        Some((result.offset()?, result))
    }

    /// `ip` as an address this database can answer: IPv4-mapped IPv6
    /// addresses (`::ffff:1.2.3.4`) fold to IPv4, as in CIDR keys.
    fn address(&self, ip: &str) -> Option<IpAddr> {
        match ip.trim().parse::<IpAddr>().ok()? {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Some(IpAddr::V4(v4)),
                None if self.reader.metadata().ip_version == 4 => None,
                None => Some(IpAddr::V6(v6)),
            },
            v4 => Some(v4),
        }
    }

    /// Nodes in the database's search tree (its size measure; an MMDB does
    /// not record how many networks it holds).
    pub fn node_count(&self) -> usize {
        self.reader.metadata().node_count as usize
    }

    /// `database_type` from the metadata (e.g. `GeoLite2-City`).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// When the database was built, epoch seconds.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }
}

fn decode(ip: &str, result: &maxminddb::LookupResult<'_, Blob>) -> Result<Option<Value>, String> {
    result
        .decode::<Value>()
        .map_err(|e| format!("cannot decode the record for {ip}: {e}"))
}

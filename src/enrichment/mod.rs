//! Enrichment tables: load data files, index lookup keys, persist snapshots.
//!
//! A table is one Arrow `RecordBatch` plus one hash index per lookup key.
//! Loading (`load`) turns inline files into a typed batch, rejecting rows that
//! do not fit the schema with file, line and column; `snapshot` persists each
//! successful load as an immutable Parquet file and switches a small
//! `current.json` pointer, so a failed load never disturbs what detections
//! see. Detections (through the `python` module) and the CLI only read
//! snapshots, which makes a run reproducible.

mod geo;
mod index;
mod key;
mod load;
mod refresh;
mod selectors;
mod snapshot;

pub use geo::{mmdb_batch, GeoDb, MMDB_COLUMN};
pub use index::{parse_cidr, KeyIndex};
pub use key::{
    array_key_text, array_part, composite_key, row_key_text, KeyPart, COMPOSITE_SEPARATOR,
};
pub use load::{load_files, RowError, RowErrors};
pub use selectors::{BatchEnrichment, EnrichedField, Found};

pub use refresh::{Generation, Refresh, TableWatcher};
pub use snapshot::{
    load_current, read_manifest, sync_dynamic, sync_refreshed, sync_static, sync_tables,
    upload_key, Fresh, IngestedUpload, Manifest, Provenance, SourceFingerprint, SyncOptions,
    SyncOutcome, SyncReport,
};

use crate::config::{EnrichmentDef, LookupKey, TableFormat};
use crate::schema::{row_to_json, Field, FieldType, TableSchema};
use arrow::array::RecordBatch;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EnrichmentError {
    #[error(transparent)]
    Rows(#[from] RowErrors),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("table `{table}`: snapshot {location}: {message}")]
    Snapshot {
        table: String,
        location: String,
        message: String,
    },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("table `{table}` has no lookup key `{key}`; its keys are: {known}")]
    UnknownKey {
        table: String,
        key: String,
        known: String,
    },
    #[error("table `{table}` is a MaxMind DB: it answers record lookups (`get`), not row lookups")]
    NotRows { table: String },
    #[error("table `{table}`: {message}")]
    Record { table: String, message: String },
    #[error("table `{table}` has no snapshot yet; run `ravenwatch enrichment sync {table}`")]
    NoSnapshot { table: String },
}

pub type Result<T, E = EnrichmentError> = std::result::Result<T, E>;

/// One match of a looked-up value.
#[derive(Debug, Clone, PartialEq)]
pub enum Hit {
    /// A row of a row table.
    Row(usize),
    /// An MMDB record (shared by every value in the same network).
    Record(Arc<serde_json::Value>),
}

/// A loaded, indexed enrichment table.
#[derive(Debug)]
pub struct EnrichmentTable {
    pub name: String,
    pub schema: TableSchema,
    pub batch: RecordBatch,
    pub keys: Vec<LookupKey>,
    pub format: TableFormat,
    indexes: Vec<KeyIndex>,
    /// The database of a `format: mmdb` table (whose batch is its bytes).
    geo: Option<GeoDb>,
    pub manifest: Option<Manifest>,
}

/// A table whose columns were inferred from its data, with the columns of
/// its snapshot (and CIDR matching when its first key values are ranges,
/// as when the snapshot was written).
fn with_columns_of(def: &EnrichmentDef, batch: &RecordBatch) -> EnrichmentDef {
    let fields = batch
        .schema()
        .fields()
        .iter()
        .filter_map(|f| Some(Field::new(f.name(), FieldType::from_arrow(f.data_type())?)))
        .collect();
    let key = def
        .lookup_keys
        .first()
        .and_then(|k| k.columns.first())
        .and_then(|c| batch.column_by_name(c))
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>());
    let samples: Vec<&str> = key
        .map(|k| k.iter().flatten().take(100).collect())
        .unwrap_or_default();
    let cidr = !samples.is_empty() && samples.iter().all(|v| v.contains('/'));
    def.with_columns(fields, cidr)
}

/// The Arrow schema of a table's snapshot.
pub fn arrow_schema(def: &EnrichmentDef) -> arrow::datatypes::SchemaRef {
    match def.format {
        TableFormat::Rows => def.schema.to_arrow(),
        TableFormat::Mmdb => geo::mmdb_schema(),
    }
}

impl EnrichmentTable {
    /// Indexes `batch` by every lookup key of `def`.
    ///
    /// # Errors
    /// A key column missing from the batch.
    pub fn build(
        def: &EnrichmentDef,
        batch: RecordBatch,
        manifest: Option<Manifest>,
    ) -> Result<Self> {
        let inferred;
        let def = if def.refresh.is_some() && batch.num_columns() > 0 {
            inferred = with_columns_of(def, &batch);
            &inferred
        } else {
            def
        };
        let mut indexes = Vec::with_capacity(def.lookup_keys.len());
        let geo = match def.format {
            TableFormat::Mmdb if batch.num_rows() > 0 => Some(GeoDb::from_batch(&batch).map_err(
                |message| EnrichmentError::File {
                    path: def.file.display().to_string(),
                    message,
                },
            )?),
            _ => None,
        };
        for key in def.lookup_keys.iter().filter(|k| !k.columns.is_empty()) {
            let mut columns = Vec::with_capacity(key.columns.len());
            for name in &key.columns {
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| EnrichmentError::File {
                        path: def.file.display().to_string(),
                        message: format!("lookup key column `{name}` is missing from the data"),
                    })?;
                columns.push(column.as_ref());
            }
            indexes.push(KeyIndex::build(key, &columns));
        }
        Ok(Self {
            name: def.name.clone(),
            schema: def.schema.clone(),
            batch,
            keys: def.lookup_keys.clone(),
            format: def.format,
            indexes,
            geo,
            manifest,
        })
    }

    /// A table with no rows (a dynamic table before its first upload).
    ///
    /// # Errors
    /// As [`EnrichmentTable::build`] (a key column not in the schema).
    pub fn empty(def: &EnrichmentDef) -> Result<Self> {
        Self::build(def, RecordBatch::new_empty(arrow_schema(def)), None)
    }

    /// Rows; for an MMDB table, the nodes of its search tree.
    pub fn len(&self) -> usize {
        match &self.geo {
            Some(geo) => geo.node_count(),
            None if self.is_mmdb() => 0,
            None => self.batch.num_rows(),
        }
    }

    /// The database of a `format: mmdb` table (`None` before its first
    /// upload, or for a row table).
    pub fn geo(&self) -> Option<&GeoDb> {
        self.geo.as_ref()
    }

    /// Whether this is a `format: mmdb` table.
    pub fn is_mmdb(&self) -> bool {
        self.format == TableFormat::Mmdb
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn index(&self, index_key: Option<&str>) -> Result<&KeyIndex> {
        if self.is_mmdb() {
            return Err(EnrichmentError::NotRows {
                table: self.name.clone(),
            });
        }
        let position = match index_key {
            None => Some(0),
            Some(name) => self.keys.iter().position(|k| k.name == name),
        };
        position
            .and_then(|p| self.indexes.get(p))
            .ok_or_else(|| self.unknown_key(index_key.unwrap_or_default()))
    }

    /// An `index_key` that is not one of the table's lookup keys.
    ///
    /// # Errors
    /// [`EnrichmentError::UnknownKey`], naming the known keys.
    pub fn check_key(&self, index_key: Option<&str>) -> Result<()> {
        match index_key {
            Some(k) if !self.keys.iter().any(|key| key.name == k) => Err(self.unknown_key(k)),
            _ => Ok(()),
        }
    }

    fn unknown_key(&self, key: &str) -> EnrichmentError {
        EnrichmentError::UnknownKey {
            table: self.name.clone(),
            key: key.to_string(),
            known: self
                .keys
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The index of the lookup key `name` (`None` for an unknown key or an
    /// MMDB table).
    pub fn key_index(&self, name: &str) -> Option<&KeyIndex> {
        self.index(Some(name)).ok()
    }

    /// A row as a JSON object (timestamps as RFC 3339).
    pub fn row_json(&self, row: usize) -> serde_json::Map<String, serde_json::Value> {
        row_to_json(&self.batch, row)
    }

    /// What `key` finds: the newest row of a row table whose `index_key`
    /// (default: the first lookup key) matches, or the record of an MMDB
    /// table. This and [`EnrichmentTable::find_all`]/[`EnrichmentTable::find_many`]
    /// are the one lookup API (Python's `get()`, the CLI, the benchmark).
    ///
    /// Keys are text in the convention of [`key`](crate::enrichment::KeyPart):
    /// an `int`/`long` key column matches its decimal string; a composite
    /// key's parts are joined with [`COMPOSITE_SEPARATOR`] (see
    /// [`composite_key`]); a CIDR key takes an IP address (the most specific
    /// containing range wins); a case-insensitive key ignores case.
    ///
    /// # Errors
    /// An unknown `index_key`, or an MMDB record that does not decode.
    pub fn find(&self, key: &str, index_key: Option<&str>) -> Result<Option<Hit>> {
        match self.format {
            TableFormat::Rows => Ok(self.index(index_key)?.newest(key).map(Hit::Row)),
            TableFormat::Mmdb => self.find_record(key, index_key),
        }
    }

    /// Every match of `key`: oldest first, or for a CIDR key every
    /// containing range, most specific first (an MMDB table has at most one
    /// record per address).
    ///
    /// # Errors
    /// As [`EnrichmentTable::find`].
    pub fn find_all(&self, key: &str, index_key: Option<&str>) -> Result<Vec<Hit>> {
        match self.format {
            TableFormat::Rows => Ok(self
                .index(index_key)?
                .all(key)
                .into_iter()
                .map(Hit::Row)
                .collect()),
            TableFormat::Mmdb => Ok(self.find_record(key, index_key)?.into_iter().collect()),
        }
    }

    /// [`EnrichmentTable::find`] for many keys, aligned with `keys`.
    ///
    /// # Errors
    /// As [`EnrichmentTable::find`].
    pub fn find_many(
        &self,
        keys: &[Option<&str>],
        index_key: Option<&str>,
    ) -> Result<Vec<Option<Hit>>> {
        match self.format {
            TableFormat::Rows => {
                let index = self.index(index_key)?;
                Ok(keys
                    .iter()
                    .map(|k| k.and_then(|k| index.newest(k)).map(Hit::Row))
                    .collect())
            }
            TableFormat::Mmdb => keys
                .iter()
                .map(|k| match k {
                    Some(k) => self.find_record(k, index_key),
                    None => Ok(None),
                })
                .collect(),
        }
    }

    fn find_record(&self, key: &str, index_key: Option<&str>) -> Result<Option<Hit>> {
        self.check_key(index_key)?;
        let Some(geo) = &self.geo else {
            return Ok(None);
        };
        geo.lookup(key)
            .map(|r| r.map(|v| Hit::Record(Arc::new(v))))
            .map_err(|message| EnrichmentError::Record {
                table: self.name.clone(),
                message,
            })
    }

    /// A hit as JSON (a row object, or the record).
    pub fn hit_json(&self, hit: &Hit) -> serde_json::Value {
        match hit {
            Hit::Row(row) => serde_json::Value::Object(self.row_json(*row)),
            Hit::Record(record) => (**record).clone(),
        }
    }
}

/// Every loaded table by name.
pub type Tables = BTreeMap<String, Arc<EnrichmentTable>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Project;
    use std::path::Path;

    fn fixture_table(name: &str) -> EnrichmentTable {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = Project::load(root).expect("example project loads");
        let def = project.enrichment_table(name).unwrap().clone();
        let batch = load_files(&def, &def.data_files).unwrap();
        EnrichmentTable::build(&def, batch, None).unwrap()
    }

    #[test]
    fn list_key_finds_asset_by_second_ip() {
        let assets = fixture_table("axonius_assets");
        let by_first = assets
            .find("10.20.1.15", Some("network_interfaces_ips"))
            .unwrap()
            .unwrap();
        let by_second = assets
            .find("10.20.9.15", Some("network_interfaces_ips"))
            .unwrap()
            .unwrap();
        assert_eq!(by_first, by_second);
        assert_eq!(assets.hit_json(&by_second)["hostname"], "fin-laptop-042");
    }

    #[test]
    fn unknown_index_key_names_known_keys() {
        let ips = fixture_table("known_ip_info");
        let err = ips.find("1.1.1.1", Some("nope")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "table `known_ip_info` has no lookup key `nope`; its keys are: ip"
        );
    }
}

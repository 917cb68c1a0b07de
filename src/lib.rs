//! Ravenwatch: a detection engine for security logs.
//!
//! Enrichment tables defined in YAML are loaded into keyed Arrow tables and
//! persisted as Parquet snapshots; Python detections run in an embedded
//! interpreter over Arrow batches of log events and look rows up with
//! `table.get(key)`; matches become deduplicated alerts. See ARCHITECTURE.md
//! for how the modules below fit together.

pub mod alerts;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod enrichment;
pub mod files;
pub mod logs;
pub mod outcome;
pub mod panther;
pub mod prefilter;
pub mod python;
pub mod query;
pub mod queue;
pub mod schema;
pub mod storage;
pub mod suggest;
pub mod testing;
pub mod text;
pub mod validate;

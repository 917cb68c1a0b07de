//! The command line as clap sees it (no I/O here), and the exit codes.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ravenwatch",
    version,
    about = "Detection engine for security logs: enrichment tables, Python detections, alerts"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Project directory.
    #[arg(short = 'p', long = "project", global = true, default_value = ".")]
    pub project: PathBuf,
    /// Storage location (local folder or s3://bucket/prefix); overrides `storage:` in ravenwatch.yml.
    #[arg(long, global = true)]
    pub storage: Option<String>,
    /// Panther log type of the inputs (`AWS.CloudTrail`): picks the log
    /// table, and gives a Panther directory its built-in log table; repeat
    /// it for a Panther directory whose rules cover several.
    #[arg(long = "log-type", global = true, value_name = "TYPE")]
    pub log_types: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a project.
    Init {
        /// Folder to create the project in.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The log schema to start with, with a detection, its tests and sample logs.
        #[arg(long, value_enum, default_value_t = Starter::Ecs)]
        schema: Starter,
    },
    /// Check every configuration file, table and detection; exit 1 on any error.
    Validate,
    /// Run detection test cases (detections/<rule>/tests/*.yml, `tests:` in detection.yml).
    Test {
        /// Detections to test (default: all).
        rules: Vec<String>,
        /// Only cases whose `rule::case` id contains this text (case-insensitive).
        #[arg(short = 'k')]
        keyword: Option<String>,
        /// Report format on stdout.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also write a JUnit XML report to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Enrichment tables.
    #[command(subcommand)]
    Enrichment(EnrichmentCommand),
    /// Run SQL over enrichment tables, past runs' `alerts` and `matches`, and log files.
    Query {
        /// One SQL statement (DataFusion dialect; identifiers are case-sensitive); before or after --input.
        sql: Option<String>,
        /// Log files, folders or s3://bucket/prefix, queryable as their log table (declared fields plus `_source`).
        #[arg(long = "input", short = 'i', num_args = 1..)]
        inputs: Vec<String>,
        /// Log table of the inputs (needed when the project has several schemas).
        #[arg(long)]
        table: Option<String>,
        /// Only this run's alerts and matches (default: every run in storage).
        #[arg(long)]
        run: Option<String>,
        #[arg(long, value_enum, default_value_t = crate::query::OutputFormat::Table)]
        format: crate::query::OutputFormat,
    },
    /// Run detections over log files.
    Run {
        /// Log files, folders or s3://bucket/prefix (JSON lines, JSON arrays or {"Records": [...]}, optionally .gz/.zst).
        #[arg(long = "input", short = 'i', required = true, num_args = 1..)]
        inputs: Vec<String>,
        /// Log table of the inputs (needed when the project has several schemas).
        #[arg(long)]
        table: Option<String>,
        /// Output folder or s3://bucket/prefix (default: <storage>/runs/<run id>/).
        #[arg(long, short = 'o')]
        output: Option<String>,
        /// Print up to this many activated alerts in the summary.
        #[arg(long, default_value_t = 10)]
        show: usize,
        /// Look for newer enrichment snapshots (switched by `enrichment sync`) at most this often, between batches; 0 checks before every batch.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        refresh_seconds: u64,
        /// Queue activated alerts for their destinations without sending (`ravenwatch deliver` sends them).
        #[arg(long)]
        no_deliver: bool,
        /// Python worker processes running the detections (default: the cores available).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        workers: Option<u16>,
        /// Do not derive pre-filters from the rules' code (every event reaches detect(), or only what a hand-written `filter:` keeps).
        #[arg(long)]
        no_auto_filter: bool,
        /// Also send the events derived filters drop to detect(); exit 1 if a rule matches or raises on any of them.
        #[arg(long, conflicts_with = "no_auto_filter")]
        verify_filters: bool,
        /// Read inputs again that a committed run already processed (by default they are skipped: the input ledger in the alert state).
        #[arg(long)]
        reprocess: bool,
        /// Keep polling the inputs (folders, S3 prefixes) for new files and process each once; SIGTERM or Ctrl-C finishes the input in hand, commits what was read and exits 0.
        #[arg(long, conflicts_with_all = ["output", "reprocess"])]
        follow: bool,
        #[command(flatten)]
        every: FollowArgs,
    },
    /// Show the filter each Python rule derives from its code: the condition, what fell back to "keep" and why, purity; with --input, the share of events it passes.
    Explain {
        /// Detections to explain (default: every Python detection).
        rules: Vec<String>,
        /// Logs to measure the pass rate on.
        #[arg(long = "input", short = 'i', num_args = 1..)]
        inputs: Vec<String>,
        /// Log table of the inputs (needed when the project has several schemas).
        #[arg(long)]
        table: Option<String>,
    },
    /// Send pending deliveries (alerts to Jira, Slack, webhooks); exit 3 if some stay pending.
    Deliver {
        /// Only what this run queued; also re-queues that run's activated alerts from its alerts.jsonl.
        #[arg(long)]
        run: Option<String>,
        /// List what is pending (and why) without sending.
        #[arg(long, conflicts_with = "run")]
        list: bool,
    },
    /// Remove what interrupted runs and syncs left: uncommitted runs' outputs, snapshot data no manifest names, temporary files and locks of processes that no longer run.
    Gc {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Consume S3 event notifications from SQS and process each announced object once (input ledger, messages deleted after commit); several workers may share a queue and a storage. SIGTERM or Ctrl-C finishes the messages in hand and exits 0.
    Worker {
        /// The SQS queue URL (S3 notifications direct, wrapped in SNS, or from EventBridge).
        #[arg(long, value_name = "URL")]
        queue: String,
        /// Seconds a received message stays hidden from other workers; extended while its objects run.
        #[arg(long, default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(3..=43200))]
        visibility_seconds: u64,
        /// Messages per run at most: received 10 at a time (SQS's limit) until this many, or until the queue has no more.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        max_messages: u16,
        /// Exit once a receive finds the queue empty (drain a backlog).
        #[arg(long)]
        until_empty: bool,
        /// Python worker processes running the detections (default: the cores available).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        workers: Option<u16>,
        /// Queue activated alerts for their destinations without sending.
        #[arg(long)]
        no_deliver: bool,
        #[command(flatten)]
        grouping: GroupingArgs,
    },
    /// Run as an AWS Lambda custom runtime (`bootstrap`) for an SQS event source mapping of S3 notifications; failed messages are reported as batch item failures.
    Lambda {
        /// Python worker processes running the detections (default: the cores available).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        workers: Option<u16>,
        #[command(flatten)]
        grouping: GroupingArgs,
    },
    /// A Python worker of a run (started by `run`, speaking over a Unix socket).
    #[command(hide = true, name = "__worker")]
    PythonWorker {
        #[arg(long)]
        socket: std::path::PathBuf,
    },
    /// Timings that need the library (used by bench/run.sh).
    #[command(hide = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// How `run --follow` paces itself and lists S3.
#[derive(Debug, clap::Args)]
pub struct FollowArgs {
    /// With --follow: seconds between polls when nothing is new.
    #[arg(
        long,
        default_value_t = 10,
        value_name = "SECONDS",
        requires = "follow"
    )]
    pub poll_seconds: u64,
    /// With --follow: at most this many new inputs per committed run.
    #[arg(long, default_value_t = 20, value_name = "N", requires = "follow", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_inputs: u64,
    /// With --follow over S3: how late an object may be written with a key below ones already processed (CloudTrail: minutes); each date-ordered folder is listed from past its processed objects older than this.
    #[arg(
        long,
        default_value_t = 3600,
        value_name = "SECONDS",
        requires = "follow"
    )]
    pub lookback_seconds: u64,
    /// With --follow over S3: how often to walk the prefixes again for new folders (accounts, regions).
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECONDS",
        requires = "follow"
    )]
    pub discover_seconds: u64,
}

/// How workers group alerts across machines (`worker`, `lambda`).
#[derive(Debug, clap::Args)]
pub struct GroupingArgs {
    /// The SQS FIFO queue that orders the merges of each grouping shard (else `group_queue:` in ravenwatch.yml; `worker` default: `<queue name>-groups.fifo` beside the input queue, created if missing; `lambda`: without it, alerts are grouped in one state, one invocation at a time).
    #[arg(long, value_name = "URL")]
    pub group_queue: Option<String>,
    /// Grouping shards, when the storage is not sharded yet (an existing count is kept).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub shards: u32,
    /// Merge a shard's matches once no round wrote batches for this long, so rounds that finish out of order are grouped in event-time order (longer than a round takes).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub settle_seconds: u64,
    /// …or once its oldest batch waited this long (the latency bound under constant load).
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub longest_wait_seconds: u64,
}

impl GroupingArgs {
    pub fn settle(&self) -> crate::engine::Settle {
        crate::engine::Settle {
            quiet: std::time::Duration::from_secs(self.settle_seconds),
            longest: std::time::Duration::from_secs(self.longest_wait_seconds),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EnrichmentCommand {
    /// Load changed static tables and ingest new uploads of dynamic tables into snapshots.
    Sync {
        /// Tables to sync (default: all).
        tables: Vec<String>,
        /// Reload even when the data files are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Put files into a dynamic table's upload prefix (validated first).
    Upload {
        table: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List tables with their row counts and current snapshots.
    List,
    /// Print a table's rows.
    Show {
        table: String,
        /// Rows to print.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Look a key up, as a detection's `table.get(key)` would.
    Get {
        table: String,
        /// The key; several values for a composite key (in column order).
        #[arg(required = true, num_args = 1..)]
        key: Vec<String>,
        /// Lookup key to use (default: the table's first key).
        #[arg(long = "key")]
        index_key: Option<String>,
        /// Print every matching row, not just the newest (every containing range for a CIDR key).
        #[arg(long)]
        all: bool,
        /// Only these columns (comma-separated).
        #[arg(long, value_delimiter = ',')]
        select: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Exit codes of DESIGN §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done = 0,
    Failed = 1,
    Usage = 2,
    DoneWithErrors = 3,
}

/// The log schema a new project starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Starter {
    /// ECS-style events (`ts`, `event.*`, `source.ip`) and a failed-login rule.
    Ecs,
    /// AWS CloudTrail (`eventTime`, `Records` files) and a root-login rule.
    Cloudtrail,
}

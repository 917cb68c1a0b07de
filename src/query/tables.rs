//! DataFusion table providers over Ravenwatch's own Arrow data: enrichment
//! snapshots (shared, never copied) and the log batch a SQL detection is
//! evaluating (swapped in before each execution of a plan made once).

use crate::enrichment::EnrichmentTable;
use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use std::fmt;
use std::sync::{Arc, Mutex};

/// The column a SQL detection's log table gains: the event's row in its
/// batch, so every result row leads back to its event.
pub const ROW_COLUMN: &str = "_row";

/// An enrichment table's current snapshot as a SQL table. Scans hand
/// DataFusion the snapshot's own Arrow arrays (reference-counted), so a
/// query copies nothing, and report exact row counts so joins build their
/// hash table on the smaller side.
#[derive(Debug)]
pub struct SnapshotTable {
    table: Arc<EnrichmentTable>,
}

impl SnapshotTable {
    pub fn new(table: Arc<EnrichmentTable>) -> Self {
        Self { table }
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.table.batch.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let exec = MemorySourceConfig::try_new_exec(
            &[vec![self.table.batch.clone()]],
            self.schema(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// Holds the batch a plan's [`CurrentBatchExec`] returns on its next
/// execution.
#[derive(Debug, Default)]
pub struct BatchSlot(Mutex<Option<RecordBatch>>);

impl BatchSlot {
    pub fn set(&self, batch: Option<RecordBatch>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = batch;
        }
    }

    fn get(&self) -> Option<RecordBatch> {
        self.0.lock().ok().and_then(|b| b.clone())
    }
}

/// The log table of a SQL detection: its declared fields plus [`ROW_COLUMN`].
#[derive(Debug)]
pub struct LogBatchTable {
    schema: SchemaRef,
    slot: Arc<BatchSlot>,
}

impl LogBatchTable {
    /// `log_schema` is the log table's Arrow schema (declared fields).
    pub fn new(log_schema: &Schema, slot: Arc<BatchSlot>) -> Self {
        let mut fields: Vec<Field> = log_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(ROW_COLUMN, DataType::UInt32, false));
        Self {
            schema: Arc::new(Schema::new(fields)),
            slot,
        }
    }

    /// `batch` (declared fields) with its row numbers appended.
    ///
    /// # Errors
    /// The batch does not have the log table's schema (a bug).
    pub fn with_rows(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(rows));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[async_trait]
impl TableProvider for LogBatchTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(CurrentBatchExec {
            slot: Arc::clone(&self.slot),
            projection: projection.cloned(),
            schema,
            properties: Arc::new(properties),
        }))
    }
}

/// Leaf of a SQL detection's plan: yields whatever batch the slot holds
/// when executed. It is stateless, so the plan above it is re-executed per
/// batch without planning again.
#[derive(Debug)]
pub struct CurrentBatchExec {
    slot: Arc<BatchSlot>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for CurrentBatchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CurrentBatchExec")
    }
}

impl ExecutionPlan for CurrentBatchExec {
    fn name(&self) -> &str {
        "CurrentBatchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batch = self.slot.get().ok_or_else(|| {
            DataFusionError::Internal("no log batch was set before executing the plan".into())
        })?;
        let batch = match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter([Ok(batch)]),
        )))
    }

    /// The log stream is larger than any enrichment table: joins then build
    /// their hash table on the table side, once, and stream the events.
    fn partition_statistics(&self, _partition: Option<usize>) -> Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema);
        stats.num_rows = Precision::Inexact(1 << 32);
        stats.total_byte_size = Precision::Inexact(1 << 40);
        Ok(Arc::new(stats))
    }
}

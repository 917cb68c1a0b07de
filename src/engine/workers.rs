//! The run's side of its Python workers: N processes (`ravenwatch
//! __worker`), each with its own interpreter, fed batches in turn and
//! answering in any order; [`WorkerPool::next`] hands answers back in
//! submission order, so matches, alerts and errors do not depend on N.
//!
//! Each table generation is written once as Arrow IPC files that workers
//! map; a batch tells which generation it was prepared against and its
//! worker switches first, so every worker changes tables at the same batch.
//! A worker that dies is replaced and its batches are sent again once; a
//! batch that kills a second worker fails the run.

use super::wire::{
    encode_batch, read_frame, write_frame, write_table_file, FromWorker, TableFile, ToWorker,
};
use super::EngineError;
use crate::enrichment::Generation;
use crate::logs::{EventBatch, PositionKind};
use crate::outcome::RuleOutcome;
use crate::python::PythonError;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, BufWriter};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// Batches a worker holds at once: one running, one waiting in its pipe.
const PER_WORKER: usize = 2;

/// Per Python rule (plan order): calls made and outcomes.
pub(super) type BatchOutcomes = Vec<(u64, Vec<RuleOutcome>)>;

enum Event {
    Reply(FromWorker),
    /// The worker's output ended (it exited or was killed).
    Gone,
}

struct Worker {
    child: Child,
    /// Its socket's path (its status file sits beside it).
    socket: std::path::PathBuf,
    to: Sender<(ToWorker, Vec<u8>)>,
    generation: Option<u64>,
    in_flight: Vec<u64>,
}

struct Job {
    batch: Arc<EventBatch>,
    generation: Arc<Generation>,
    /// Per Python rule, the rows it runs on: of the batch, or with `rows`
    /// of the rows sent.
    selections: Vec<Option<Vec<u32>>>,
    /// When every rule runs on some rows only: the rows any rule runs on,
    /// the only ones sent to the worker (answers are mapped back).
    rows: Option<Vec<u32>>,
    attempts: u32,
}

/// The rows any rule runs on, when that is fewer than all, and each
/// rule's selection in the numbering of those rows.
fn narrow(
    rows: usize,
    selections: Vec<Option<Vec<u32>>>,
) -> (Option<Vec<u32>>, Vec<Option<Vec<u32>>>) {
    let Some(all) = selections
        .iter()
        .map(Option::as_ref)
        .collect::<Option<Vec<_>>>()
    else {
        return (None, selections);
    };
    let mut union: Vec<u32> = all.iter().flat_map(|s| s.iter().copied()).collect();
    union.sort_unstable();
    union.dedup();
    if union.len() == rows {
        return (None, selections);
    }
    let renumbered = all
        .iter()
        .map(|s| {
            Some(
                s.iter()
                    .map(|r| union.binary_search(r).unwrap_or_default() as u32)
                    .collect(),
            )
        })
        .collect();
    (Some(union), renumbered)
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub exe: PathBuf,
    pub project: PathBuf,
    /// More arguments, to load the project as the run did (`--log-type`).
    pub args: Vec<String>,
    /// Environment for the worker (the Panther caching store's file).
    pub env: Vec<(String, PathBuf)>,
}

pub(super) struct WorkerPool {
    command: WorkerCommand,
    table: String,
    rules: Vec<String>,
    workers: Vec<Option<Worker>>,
    events: Receiver<(usize, Event)>,
    sender: Sender<(usize, Event)>,
    files: tempfile::TempDir,
    generations: HashMap<u64, Vec<TableFile>>,
    jobs: BTreeMap<u64, Job>,
    done: BTreeMap<u64, BatchOutcomes>,
    /// Workers started in all, replacements included.
    pub started: usize,
}

impl WorkerPool {
    /// How many worker processes the pool keeps.
    pub fn size(&self) -> usize {
        self.workers.len()
    }

    /// Starts `n` workers with `rules` of log table `table` loaded against
    /// `generation`'s tables.
    ///
    /// # Errors
    /// A worker could not start, or the rules do not load.
    pub fn start(
        command: WorkerCommand,
        n: usize,
        table: &str,
        rules: Vec<String>,
        generation: &Arc<Generation>,
    ) -> Result<Self, EngineError> {
        let (sender, events) = std::sync::mpsc::channel();
        let files = tempfile::Builder::new()
            .prefix("ravenwatch-tables-")
            .tempdir()
            .map_err(|e| {
                EngineError::Internal(format!("cannot create a folder for tables: {e}"))
            })?;
        let mut pool = Self {
            command,
            table: table.to_string(),
            rules,
            workers: Vec::new(),
            events,
            sender,
            files,
            generations: HashMap::new(),
            jobs: BTreeMap::new(),
            done: BTreeMap::new(),
            started: 0,
        };
        for _ in 0..n.max(1) {
            let id = pool.spawn()?;
            pool.switch(id, generation)?;
        }
        let mut ready = 0;
        while ready < pool.workers.len() {
            let (id, event) = pool.recv()?;
            match event {
                Event::Reply(FromWorker::Ready) => ready += 1,
                other => pool.fail(id, other)?,
            }
        }
        Ok(pool)
    }

    fn recv(&self) -> Result<(usize, Event), EngineError> {
        self.events
            .recv()
            .map_err(|_| EngineError::Internal("every worker channel closed".into()))
    }

    /// Turns an unexpected event of worker `id` into the run's error.
    fn fail(&mut self, id: usize, event: Event) -> Result<(), EngineError> {
        match event {
            Event::Reply(FromWorker::LoadFailed { errors }) => {
                Err(EngineError::Python(PythonError::Load(errors)))
            }
            Event::Reply(FromWorker::Failed { message }) => Err(EngineError::Internal(format!(
                "Python worker {id}: {message}"
            ))),
            Event::Gone => Err(EngineError::Internal(format!(
                "Python worker {id} {} while loading the detections",
                self.exit_status(id)
            ))),
            Event::Reply(other) => Err(EngineError::Internal(format!(
                "Python worker {id} answered {other:?} out of turn"
            ))),
        }
    }

    fn spawn(&mut self) -> Result<usize, EngineError> {
        let id = self.workers.len();
        let internal = |what: &str, e: std::io::Error| {
            EngineError::Internal(format!("cannot start a Python worker: {what}: {e}"))
        };
        let socket = self.files.path().join(format!("w{id}.sock"));
        let listener = UnixListener::bind(&socket).map_err(|e| internal("socket", e))?;
        let mut child = Command::new(&self.command.exe)
            .arg("__worker")
            .arg("-p")
            .arg(&self.command.project)
            .arg("--socket")
            .arg(&socket)
            .args(&self.command.args)
            .envs(self.command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            // What rules print goes where the run's own messages go.
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| internal(&self.command.exe.display().to_string(), e))?;
        let stream = accept(&listener, &mut child).map_err(|e| internal("connect", e))?;
        let stdin = stream.try_clone().map_err(|e| internal("socket", e))?;
        let stdout = stream;
        let (to, requests) = std::sync::mpsc::channel::<(ToWorker, Vec<u8>)>();
        std::thread::spawn(move || {
            let mut out = BufWriter::new(stdin);
            for (request, body) in requests {
                if write_frame(&mut out, &request, &body).is_err() {
                    break;
                }
            }
            // The run is done with this worker: end of input, it exits.
            let _ = out.get_ref().shutdown(std::net::Shutdown::Write);
        });
        let events = self.sender.clone();
        std::thread::spawn(move || {
            let mut input = BufReader::new(stdout);
            while let Ok(Some((reply, _))) = read_frame::<FromWorker>(&mut input) {
                if events.send((id, Event::Reply(reply))).is_err() {
                    return;
                }
            }
            let _ = events.send((id, Event::Gone));
        });
        let start = ToWorker::Start {
            table: self.table.clone(),
            rules: self.rules.clone(),
        };
        let _ = to.send((start, Vec::new()));
        self.workers.push(Some(Worker {
            child,
            socket,
            to,
            generation: None,
            in_flight: Vec::new(),
        }));
        self.started += 1;
        Ok(id)
    }

    /// Sends worker `id` the table files of `generation` (written once).
    fn switch(&mut self, id: usize, generation: &Generation) -> Result<(), EngineError> {
        if !self.generations.contains_key(&generation.id) {
            let mut files = Vec::new();
            for (name, table) in &generation.tables {
                let path =
                    self.files
                        .path()
                        .join(format!("g{}-{}.arrow", generation.id, files.len()));
                write_table_file(&path, &table.batch).map_err(|e| {
                    EngineError::Internal(format!("cannot write table `{name}` for workers: {e}"))
                })?;
                files.push(TableFile {
                    name: name.clone(),
                    path,
                    manifest: table.manifest.clone(),
                });
            }
            self.generations.insert(generation.id, files);
        }
        let worker = self.workers[id].as_mut().expect("a live worker");
        let request = ToWorker::Tables {
            files: self.generations[&generation.id].clone(),
        };
        let _ = worker.to.send((request, Vec::new()));
        worker.generation = Some(generation.id);
        Ok(())
    }

    /// Queues `batch` for the rules; `selections` per Python rule.
    ///
    /// # Errors
    /// A worker failed in a way the run cannot recover from.
    pub fn submit(
        &mut self,
        seq: u64,
        batch: Arc<EventBatch>,
        generation: Arc<Generation>,
        selections: Vec<Option<Vec<u32>>>,
    ) -> Result<(), EngineError> {
        let (rows, selections) = narrow(batch.len(), selections);
        self.jobs.insert(
            seq,
            Job {
                batch,
                generation,
                selections,
                rows,
                attempts: 0,
            },
        );
        self.dispatch(seq)
    }

    fn dispatch(&mut self, seq: u64) -> Result<(), EngineError> {
        let id = loop {
            let free = self
                .workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| w.as_ref().map(|w| (i, w.in_flight.len())))
                .filter(|(_, n)| *n < PER_WORKER)
                .min_by_key(|(_, n)| *n)
                .map(|(i, _)| i);
            match free {
                Some(id) => break id,
                None => self.handle_one()?,
            }
        };
        let job = self.jobs.get_mut(&seq).expect("a queued job");
        job.attempts += 1;
        let generation = Arc::clone(&job.generation);
        let body = encode_batch(&job.batch, job.rows.as_deref())
            .map_err(|e| EngineError::Internal(format!("cannot encode a batch: {e}")))?;
        let request = ToWorker::Batch {
            seq,
            table: job.batch.table.to_string(),
            file: job.batch.file.to_string(),
            line_positions: job.batch.position_kind == PositionKind::Line,
            selections: job.selections.clone(),
        };
        if self.workers[id].as_ref().and_then(|w| w.generation) != Some(generation.id) {
            self.switch(id, &generation)?;
        }
        let worker = self.workers[id].as_mut().expect("a live worker");
        worker.in_flight.push(seq);
        let _ = worker.to.send((request, body));
        Ok(())
    }

    /// Waits for one worker event and acts on it.
    fn handle_one(&mut self) -> Result<(), EngineError> {
        let (id, event) = self.recv()?;
        match event {
            Event::Reply(FromWorker::Ready) => Ok(()),
            Event::Reply(FromWorker::Outcomes { seq, mut rules }) => {
                if let Some(w) = self.workers[id].as_mut() {
                    w.in_flight.retain(|s| *s != seq);
                }
                if let Some(Job {
                    rows: Some(rows), ..
                }) = self.jobs.remove(&seq)
                {
                    // Back to the batch's own row numbers.
                    for outcome in rules.iter_mut().flat_map(|(_, o)| o.iter_mut()) {
                        let row = match outcome {
                            RuleOutcome::Match(m) => &mut m.row,
                            RuleOutcome::Error { row, .. } => row,
                        };
                        *row = rows.get(*row).map_or(*row, |&r| r as usize);
                    }
                }
                self.done.insert(seq, rules);
                Ok(())
            }
            Event::Gone => self.replace(id),
            other => self.fail(id, other),
        }
    }

    /// Replaces dead worker `id` and sends its batches again; a batch
    /// already sent twice fails the run instead.
    fn replace(&mut self, id: usize) -> Result<(), EngineError> {
        let status = self.exit_status(id);
        let Some(dead) = self.workers[id].take() else {
            return Ok(());
        };
        let running = super::worker::read_status(&dead.socket);
        for seq in &dead.in_flight {
            let job = &self.jobs[seq];
            let rule = match &running {
                Some((s, rule)) if s == seq && !rule.is_empty() => {
                    format!(" while rule `{rule}` ran")
                }
                _ => String::new(),
            };
            if job.attempts >= 2 {
                return Err(EngineError::Worker(format!(
                    "a Python worker {status}{rule} twice on the batch of {} (events {}–{}); nothing was committed",
                    job.batch.file,
                    job.batch.positions.first().copied().unwrap_or(0),
                    job.batch.positions.last().copied().unwrap_or(0),
                )));
            }
            eprintln!(
                "warning: a Python worker {status}{rule} on the batch of {}; running it again in a new worker",
                job.batch.file
            );
        }
        self.spawn()?;
        for seq in dead.in_flight {
            self.dispatch(seq)?;
        }
        Ok(())
    }

    fn exit_status(&mut self, id: usize) -> String {
        let Some(worker) = self.workers[id].as_mut() else {
            return "exited".into();
        };
        match worker.child.wait() {
            Ok(status) => match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                _ => "exited".into(),
            },
            Err(e) => format!("could not be waited for ({e})"),
        }
    }

    /// The outcomes of batch `seq`, waiting for them if needed.
    ///
    /// # Errors
    /// As [`WorkerPool::submit`].
    pub fn outcomes(&mut self, seq: u64) -> Result<BatchOutcomes, EngineError> {
        loop {
            if let Some(done) = self.done.remove(&seq) {
                return Ok(done);
            }
            self.handle_one()?;
        }
    }

    /// Whether batch `seq` has been answered.
    pub fn is_done(&self, seq: u64) -> bool {
        self.done.contains_key(&seq)
    }

    /// Closes every worker's input and waits for it to exit.
    pub fn finish(mut self) {
        for worker in self.workers.iter_mut().filter_map(Option::take) {
            let Worker { mut child, to, .. } = worker;
            drop(to);
            let _ = child.wait();
        }
    }
}

/// The worker's connection, or why it never came (it exited first).
fn accept(listener: &UnixListener, child: &mut Child) -> std::io::Result<UnixStream> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait()? {
                    return Err(std::io::Error::other(format!(
                        "the worker exited before connecting ({status})"
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        for worker in self.workers.iter_mut().filter_map(Option::take) {
            let Worker { mut child, to, .. } = worker;
            drop(to);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

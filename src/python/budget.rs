//! A time budget per rule call. Python cannot be stopped from outside the
//! interpreter, so a watchdog thread watches a call counter: when one call
//! outlasts the budget, it sends `SIGUSR1` to the main thread (a real
//! signal, so a blocking call such as `time.sleep` is woken), whose handler raises `RuleTimeout` (a
//! `BaseException`, so a rule's `except Exception` does not swallow it)
//! inside the rule. The runtime reports it as that call's error and goes
//! on with the next event. A rule that swallows it anyway three times
//! ends the process with a message (a worker is then replaced, and the
//! batch retried once, as for any worker that dies).

use pyo3::prelude::*;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Shared {
    /// Odd while a call runs; incremented at each start and end.
    seq: AtomicU64,
    /// The rule of the call running (index into `rules`).
    rule: AtomicUsize,
    /// The `seq` the watchdog last interrupted.
    fired: AtomicU64,
}

/// The watchdog of one runtime (its thread stops when this is dropped).
pub struct Budget {
    shared: Arc<Shared>,
    pub limit: Duration,
    _stop: std::sync::mpsc::Sender<()>,
}

impl Budget {
    /// Starts the watchdog and installs the `SIGUSR1` handler; `None` when
    /// not on the interpreter's main thread (Python handles signals there only).
    pub fn start(helpers: &Bound<'_, PyAny>, limit: Duration, rules: Vec<String>) -> Option<Self> {
        if helpers.call_method0("install_budget_handler").is_err() {
            return None;
        }
        let stop_main = helpers.getattr("stop_main").ok()?.unbind();
        let shared = Arc::new(Shared {
            seq: AtomicU64::new(0),
            rule: AtomicUsize::new(0),
            fired: AtomicU64::new(u64::MAX),
        });
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let watched = Arc::clone(&shared);
        let tick = (limit / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
        std::thread::spawn(move || {
            let (mut seen, mut since, mut strikes) = (u64::MAX, Instant::now(), 0);
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                let seq = watched.seq.load(Ordering::Acquire);
                if seq.is_multiple_of(2) || seq != seen {
                    (seen, since, strikes) = (seq, Instant::now(), 0);
                    continue;
                }
                if since.elapsed() < limit {
                    continue;
                }
                strikes += 1;
                if strikes > 3 {
                    let rule = rules
                        .get(watched.rule.load(Ordering::Relaxed))
                        .map_or("a rule", String::as_str);
                    eprintln!(
                        "error: {rule} kept running after being stopped three times at its time budget of {}s (it catches BaseException?); ending this process",
                        limit.as_secs_f64()
                    );
                    std::process::exit(70);
                }
                watched.fired.store(seq, Ordering::Release);
                since = Instant::now();
                Python::attach(|py| {
                    let _ = stop_main.call0(py);
                });
            }
        });
        Some(Self {
            shared,
            limit,
            _stop: stop,
        })
    }

    /// Marks the start of a call of rule number `rule`.
    pub fn enter(&self, rule: usize) {
        self.shared.rule.store(rule, Ordering::Relaxed);
        self.shared.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks its end; whether the watchdog stopped it.
    pub fn leave(&self) -> bool {
        let seq = self.shared.seq.fetch_add(1, Ordering::AcqRel);
        self.shared.fired.load(Ordering::Acquire) == seq
    }
}

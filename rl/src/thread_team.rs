//! A team of threads that run one job together, part `i` on thread `i`
//! (the caller's part 0), for a Learner's host steps
//! ([`crate::host_threads`]). A gradient step hands its threads work twice
//! (the loss's shares of rows, then Adam's parts of the vector), a few
//! hundred microseconds each, thousands of times a second. A general pool
//! that parks an idle thread on a futex and parks the waiting caller too
//! pays two wake-ups per hand-off, tens of microseconds each on a
//! virtualised core: measured on DQN's [256, 256] steps, the second thread
//! gained 8 % on the loss and made Adam slower than one thread.
//!
//! So the team's helpers spin for a while after each job before they sleep
//! ([`SPIN_BEFORE_SLEEP`], as OpenMP runtimes spin before they block), and
//! the caller spins, then yields, until its helpers are done: jobs of a
//! step follow each other within that time and hand over in well under a
//! microsecond. Between iterations (an EnvRunner's sampling, a checkpoint)
//! the helpers sleep and cost nothing.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long a helper waits for the next job by spinning before it sleeps:
/// longer than the gaps between the jobs of a gradient step and between
/// steps (a replayed minibatch is drawn in about a tenth of this), short
/// enough that a Learner waiting on its EnvRunners gives the core back at
/// once.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(300);

/// Spins between two looks at the clock while spinning.
const SPINS_PER_CLOCK_READ: u32 = 64;

/// A job as the helpers see it: the caller's closure with its lifetime
/// erased, valid while the job runs (the caller does not return before
/// every helper is done with it).
type ErasedJob = *const (dyn Fn(usize) + Sync + 'static);

struct Job(ErasedJob);

// SAFETY: the closure behind the pointer is `Sync`, and the pointer is
// only read while the caller keeps the closure alive (`ThreadTeam::run`).
unsafe impl Send for Job {}

struct CurrentJob {
    job: Job,
    parts: usize,
    /// The generation that handed it out.
    generation: u64,
}

struct Shared {
    /// Counts the jobs handed out; a helper runs a job when it sees this
    /// change.
    generation: AtomicU64,
    /// The current job, if one runs.
    job: Mutex<Option<CurrentJob>>,
    /// Helpers still running the current job.
    remaining: AtomicUsize,
    /// The first panic of a helper's part, raised again by the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Set when the team is dropped.
    shutdown: AtomicBool,
}

struct Helper {
    thread: Thread,
    /// Set while the helper sleeps (or is about to), so that a new job
    /// wakes it.
    sleeping: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

pub struct ThreadTeam {
    shared: Arc<Shared>,
    helpers: Vec<Helper>,
    /// Held while a job runs: a second caller at the same time runs all
    /// its parts itself instead of handing them to busy helpers.
    running: Mutex<()>,
}

impl ThreadTeam {
    /// A team of the caller and `helpers` threads named `name-1`, … .
    pub fn start(helpers: usize, name: &str) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: Mutex::new(None),
            remaining: AtomicUsize::new(0),
            panic: Mutex::new(None),
            shutdown: AtomicBool::new(false),
        });
        let mut team = ThreadTeam {
            shared: shared.clone(),
            helpers: Vec::with_capacity(helpers),
            running: Mutex::new(()),
        };
        for index in 1..=helpers {
            let sleeping = Arc::new(AtomicBool::new(false));
            let (shared, asleep) = (shared.clone(), sleeping.clone());
            // A team that cannot start all its helpers is dropped here,
            // which stops those that did start.
            let handle = thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || serve(&shared, index, &asleep))?;
            team.helpers.push(Helper {
                thread: handle.thread().clone(),
                sleeping,
                handle: Some(handle),
            });
        }
        Ok(team)
    }

    /// Threads in the team, the caller's included.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `job(0)`, …, `job(parts − 1)`, part 0 on the calling thread and
    /// part `i` on helper `i`, and returns when all have run. A panic in
    /// any part is raised here once every part is done.
    ///
    /// # Panics
    /// If `parts` is more than [`ThreadTeam::threads`].
    pub fn run(&self, parts: usize, job: impl Fn(usize) + Sync) {
        assert!(
            parts <= self.threads(),
            "{parts} parts for {} threads",
            self.threads()
        );
        let guard = match self.running.try_lock() {
            Ok(guard) if parts > 1 => guard,
            _ => {
                (0..parts).for_each(job);
                return;
            }
        };
        let erased: &(dyn Fn(usize) + Sync) = &job;
        // SAFETY: only the lifetime changes; the helpers drop the pointer
        // before `remaining` reaches zero, and this call does not return
        // (or unwind) before it does.
        let erased: ErasedJob = unsafe { std::mem::transmute(erased) };
        let shared = &self.shared;
        // The count first: a helper may find the job in its slot before
        // the generation changes, and counts itself done against it.
        shared.remaining.store(parts - 1, Ordering::SeqCst);
        let generation = shared.generation.load(Ordering::SeqCst) + 1;
        *shared.job.lock().expect("job slot") = Some(CurrentJob {
            job: Job(erased),
            parts,
            generation,
        });
        shared.generation.store(generation, Ordering::SeqCst);
        for helper in &self.helpers[..parts - 1] {
            if helper.sleeping.load(Ordering::SeqCst) {
                helper.thread.unpark();
            }
        }
        let own = catch_unwind(AssertUnwindSafe(|| job(0)));
        wait_until(|| shared.remaining.load(Ordering::Acquire) == 0);
        *shared.job.lock().expect("job slot") = None;
        drop(guard);
        if let Err(panic) = own {
            resume_unwind(panic);
        }
        let helper_panic = shared.panic.lock().expect("panic slot").take();
        if let Some(panic) = helper_panic {
            resume_unwind(panic);
        }
    }
}

impl Drop for ThreadTeam {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        for helper in &mut self.helpers {
            helper.thread.unpark();
            if let Some(handle) = helper.handle.take() {
                // A helper's panics are caught per job, so it ends cleanly.
                let _ = handle.join();
            }
        }
    }
}

/// Helper `index`'s loop: wait for a job, run its part if it has one.
fn serve(shared: &Shared, index: usize, sleeping: &AtomicBool) {
    // A helper may look at the slot after the job it woke for was done
    // without it (it had no part) and the next one handed out: it runs
    // each generation's part once, whichever wake-up finds it.
    let (mut seen, mut last_ran) = (0, 0);
    loop {
        seen = next_generation(shared, seen, sleeping);
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let job = shared
            .job
            .lock()
            .expect("job slot")
            .as_ref()
            .filter(|current| index < current.parts && current.generation > last_ran)
            .map(|current| (current.job.0, current.generation));
        let Some((job, generation)) = job else {
            continue;
        };
        (seen, last_ran) = (generation, generation);
        // SAFETY: the caller keeps the closure alive until `remaining`
        // reaches zero, which this helper's decrement below is part of.
        let ran = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(index) }));
        if let Err(panic) = ran {
            shared
                .panic
                .lock()
                .expect("panic slot")
                .get_or_insert(panic);
        }
        shared.remaining.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits until the generation differs from `seen` (or the team stops),
/// spinning for [`SPIN_BEFORE_SLEEP`], then parked, and returns it.
fn next_generation(shared: &Shared, seen: u64, sleeping: &AtomicBool) -> u64 {
    let changed = || {
        let now = shared.generation.load(Ordering::SeqCst);
        (now != seen).then_some(now)
    };
    if let Some(now) = spin(changed) {
        return now;
    }
    loop {
        // Announce the sleep before the last look, so that a job handed
        // out after that look finds `sleeping` set and unparks this thread
        // (an unpark before `park` makes it return at once).
        sleeping.store(true, Ordering::SeqCst);
        if let Some(now) = changed() {
            sleeping.store(false, Ordering::SeqCst);
            return now;
        }
        thread::park();
        sleeping.store(false, Ordering::SeqCst);
        if let Some(now) = changed() {
            return now;
        }
    }
}

/// Spins, then yields the core, until `done`: the helpers' parts are as
/// long as the caller's, so the wait is short unless a helper was
/// descheduled.
fn wait_until(done: impl Fn() -> bool) {
    if spin(|| done().then_some(())).is_some() {
        return;
    }
    while !done() {
        thread::yield_now();
    }
}

/// What `ready` gives, as soon as it gives something, spinning for at most
/// [`SPIN_BEFORE_SLEEP`]; `None` if it gave nothing in that time.
fn spin<T>(ready: impl Fn() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        for _ in 0..SPINS_PER_CLOCK_READ {
            if let Some(value) = ready() {
                return Some(value);
            }
            std::hint::spin_loop();
        }
        if started.elapsed() >= SPIN_BEFORE_SLEEP {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::thread::ThreadId;

    /// Each part of each job runs once, part 0 on the caller and the
    /// others each on a helper of its own, over many jobs of changing
    /// sizes back to back (helpers without a part in one job take part in
    /// the next).
    #[test]
    fn every_part_runs_once_on_its_own_thread() {
        let team = ThreadTeam::start(2, "team-test").unwrap();
        assert_eq!(team.threads(), 3);
        let caller = thread::current().id();
        for round in 0..20_000usize {
            let parts = 1 + round % 3;
            let runs: Vec<AtomicU32> = (0..3).map(|_| AtomicU32::new(0)).collect();
            let threads: Vec<Mutex<Option<ThreadId>>> = (0..3).map(|_| Mutex::new(None)).collect();
            team.run(parts, |part| {
                runs[part].fetch_add(1, Ordering::SeqCst);
                *threads[part].lock().unwrap() = Some(thread::current().id());
            });
            let runs: Vec<u32> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
            let expected: Vec<u32> = (0..3).map(|part| u32::from(part < parts)).collect();
            assert_eq!(runs, expected, "job {round} of {parts} parts");
            let threads: Vec<ThreadId> =
                threads.iter().filter_map(|t| *t.lock().unwrap()).collect();
            assert_eq!(threads[0], caller);
            for (i, a) in threads.iter().enumerate() {
                assert!(
                    threads[i + 1..].iter().all(|b| b != a),
                    "two parts on one thread"
                );
            }
        }
    }

    /// Runs a job of two parts on `team` and checks that both ran.
    fn assert_runs_both_parts(team: &ThreadTeam) {
        let ran = AtomicU32::new(0);
        team.run(2, |_| {
            ran.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }

    /// A helper that went to sleep wakes for the next job.
    #[test]
    fn sleeping_helpers_wake_for_a_job() {
        let team = ThreadTeam::start(1, "team-test").unwrap();
        for _ in 0..3 {
            while !team.helpers[0].sleeping.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            assert_runs_both_parts(&team);
        }
    }

    /// A helper's panic reaches the caller after the other parts ran, and
    /// the team goes on working.
    #[test]
    fn a_panic_in_a_part_is_raised_by_the_caller() {
        let team = ThreadTeam::start(1, "team-test").unwrap();
        let caller_ran = AtomicBool::new(false);
        let raised = catch_unwind(AssertUnwindSafe(|| {
            team.run(2, |part| {
                if part == 1 {
                    panic!("part 1 fails");
                }
                caller_ran.store(true, Ordering::SeqCst);
            })
        }))
        .unwrap_err();
        assert_eq!(raised.downcast_ref::<&str>(), Some(&"part 1 fails"));
        assert!(caller_ran.load(Ordering::SeqCst));
        assert_runs_both_parts(&team);
    }

    /// Two callers at once: each job runs all its parts (the second
    /// caller's on its own thread while the helpers are busy).
    #[test]
    fn concurrent_callers_each_run_all_their_parts() {
        let team = ThreadTeam::start(1, "team-test").unwrap();
        let total = AtomicU32::new(0);
        thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..5_000 {
                        team.run(2, |_| {
                            total.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::SeqCst), 2 * 5_000 * 2);
    }
}

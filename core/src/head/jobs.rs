//! Jobs (Ray's GCS job manager): every driver is a job that owns what it
//! creates. The job table keeps every driver that used the cluster, the
//! embedded one first. When a driver leaves (exits, panics, is SIGKILLed: its
//! stream closes) its job ends, and its non-detached actors, placement
//! groups, queued and running tasks and the references it still holds are
//! released. Named actors live in the namespace of the job that made them.

use super::executables::{Code, JobCode};
use super::tasks::TaskKind;
use super::worker_pool::WorkerRecord;
use super::{Node, NodeState};
use crate::ids::{ActorId, JobId, ObjectId, WorkerId};
use crate::packaging::JobExecutable;
use crate::protocol::*;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::mpsc;

impl Node {
    /// A driver joined from outside: it gets a record (to route replies) but no
    /// work, and the workers it needs run its executable. Its id must be free:
    /// a connection that claimed a live worker's or driver's id would receive
    /// that process's replies.
    pub(super) fn register_driver(
        &self,
        id: WorkerId,
        hello: DriverIdentity,
        sender: mpsc::UnboundedSender<NodeToWorker>,
    ) -> std::result::Result<WorkerId, tonic::Status> {
        let DriverIdentity {
            pid,
            executable,
            job,
            namespace,
            log_to_driver,
        } = hello;
        self.with_state(|state| {
            if state.workers.contains_key(&id) {
                return Err(tonic::Status::already_exists(format!(
                    "{id} belongs to a live process of this cluster"
                )));
            }
            if state.jobs.contains_key(&job) {
                return Err(tonic::Status::already_exists(format!(
                    "{job} already ran on this cluster"
                )));
            }
            state.start_job(job, pid, &executable.path, namespace);
            state.drivers.insert(
                id,
                DriverJob {
                    job,
                    log_to_driver,
                    owned: FxHashMap::default(),
                },
            );
            state.workers.insert(
                id,
                WorkerRecord {
                    node: format!("driver-{pid}"),
                    is_driver: true,
                    code: Some(Arc::new(JobCode::new(job, executable))),
                    pid: None,
                    sender: Some(sender),
                    call_address: None,
                    gpu_ids: Vec::new(),
                    actor: None,
                    lease: None,
                    assigned: VecDeque::new(),
                    last_task: None,
                    stopping: false,
                },
            );
            Ok(id)
        })
    }

    /// Lines a worker printed go to the driver of the job it works for,
    /// prefixed `(name pid=N node=ID)` as Ray's log_to_driver does; the
    /// embedded driver prints them itself.
    pub(super) fn forward_log(&self, worker: WorkerId, pid: u32, err: bool, lines: Vec<String>) {
        let state = self.state.lock();
        let Some(record) = state.workers.get(&worker) else {
            return;
        };
        let (job, name) = match record.actor.and_then(|a| state.actor_job_and_class(a)) {
            Some((job, class)) => (job, class.to_string()),
            None => record
                .last_task
                .clone()
                .unwrap_or((self.embedded_job, "worker".to_string())),
        };
        let source = format!(
            "({name} pid={} node={})",
            record.pid.unwrap_or(pid),
            record.node
        );
        self.to_driver(state, job, source, err, lines);
    }

    /// Sends `lines` to `job`'s driver (if it takes its workers' output),
    /// releasing the state first; the embedded driver prints them itself.
    fn to_driver(
        &self,
        state: parking_lot::MutexGuard<'_, NodeState>,
        job: JobId,
        source: String,
        err: bool,
        lines: Vec<String>,
    ) {
        let driver = state.drivers.iter().find(|(_, d)| d.job == job);
        let sender = driver
            .filter(|(_, d)| d.log_to_driver)
            .and_then(|(id, _)| state.workers.get(id)?.sender.clone());
        let embedded = driver.is_none() && job == self.embedded_job && self.config.prestart_workers;
        drop(state);
        if let Some(sender) = sender {
            let _ = sender.send(NodeToWorker::Log { source, err, lines });
        } else if embedded {
            crate::worker::print_log(&source, err, &lines);
        }
    }

    /// Every [`resource_warnings::PERIOD`](super::resource_warnings::PERIOD),
    /// tells drivers whose actors, placement groups or tasks have waited
    /// long for resources.
    pub(super) async fn warn_of_waiting_work(node: std::sync::Weak<Node>) {
        let mut tick = tokio::time::interval(super::resource_warnings::PERIOD);
        loop {
            tick.tick().await;
            let Some(head) = node.upgrade() else { return };
            let warnings = head
                .state
                .lock()
                .resource_warnings(std::time::Instant::now());
            for (job, line) in warnings {
                let state = head.state.lock();
                head.to_driver(state, job, "(scheduler)".into(), true, vec![line]);
            }
        }
    }
}

/// What a remote driver says about itself in its hello.
pub(super) struct DriverIdentity {
    pub(super) pid: u32,
    pub(super) executable: JobExecutable,
    pub(super) job: JobId,
    pub(super) namespace: Option<String>,
    pub(super) log_to_driver: bool,
}

/// A connected remote driver's job, and the references it holds: its handles
/// (puts, results of its submissions, clones) that are released for it if it
/// exits without dropping them.
pub(super) struct DriverJob {
    job: JobId,
    /// Wants its workers' output (Ray's `log_to_driver`).
    log_to_driver: bool,
    owned: FxHashMap<ObjectId, u64>,
}

#[cfg(test)]
impl DriverJob {
    /// The job of a driver that holds no references.
    pub(super) fn for_test(job: JobId) -> DriverJob {
        DriverJob {
            job,
            log_to_driver: false,
            owned: FxHashMap::default(),
        }
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Most ended jobs the job table keeps (Ray bounds its tables too).
const MAX_ENDED_JOBS: usize = 1000;

impl NodeState {
    pub(super) fn start_job(
        &mut self,
        job: JobId,
        pid: u32,
        executable: &str,
        namespace: Option<String>,
    ) {
        self.jobs.insert(
            job,
            JobStatus {
                job_id: job.to_string(),
                driver_pid: pid,
                executable: executable.to_string(),
                started_at: unix_now(),
                running: true,
                ended_at: None,
                namespace: namespace.unwrap_or_else(|| job.to_string()),
            },
        );
    }

    /// The job a process works for: a driver's own, an actor's creator's, or
    /// the job of the task a worker runs (nested submissions belong to it).
    /// The job and code of a task `worker` submits, counting the refs it
    /// hands over if `worker` is a remote driver.
    pub(super) fn submitted_by(
        &mut self,
        worker: WorkerId,
        embedded: JobId,
        spec: &TaskSpec,
    ) -> (JobId, Code) {
        let job = self.job_of(worker, embedded);
        self.note_driver_refs(worker, &[spec.return_id], &spec.args);
        (job, self.code_of(worker))
    }

    pub(super) fn job_of(&self, worker: WorkerId, embedded: JobId) -> JobId {
        if let Some(driver) = self.drivers.get(&worker) {
            return driver.job;
        }
        let Some(record) = self.workers.get(&worker) else {
            return embedded;
        };
        if let Some((job, _)) = record.actor.and_then(|a| self.actor_job_and_class(a)) {
            return job;
        }
        record
            .assigned
            .front()
            .and_then(|t| self.tasks.get(t))
            .map_or(embedded, |t| t.job)
    }

    pub(super) fn namespace_of(&self, job: JobId) -> String {
        self.jobs
            .get(&job)
            .map_or_else(|| job.to_string(), |j| j.namespace.clone())
    }

    /// The live actor named `name` in the namespace of `job`; counts the
    /// handle the caller gets.
    pub(super) fn named_actor(&mut self, job: JobId, name: &str) -> Option<(ActorId, String)> {
        let id = *self
            .named_actors
            .get(&(self.namespace_of(job), name.to_string()))?;
        let class = self.actors.get(&id)?.spec.class.clone();
        self.take_handle(id);
        Some((id, class))
    }

    /// A driver took references to `ids`, and handed those of its `args` to a
    /// task or actor.
    pub(super) fn note_driver_refs(
        &mut self,
        worker: WorkerId,
        ids: &[ObjectId],
        args: &[TaskArg],
    ) {
        let Some(driver) = self.drivers.get_mut(&worker) else {
            return;
        };
        for id in ids {
            *driver.owned.entry(*id).or_default() += 1;
        }
        let handed = args.iter().filter_map(|a| match a {
            TaskArg::Ref(id) => Some(*id),
            TaskArg::Value(_) => None,
        });
        for id in handed {
            forget_one(&mut driver.owned, id);
        }
    }

    /// A driver dropped references to `ids`.
    pub(super) fn note_driver_releases(&mut self, worker: WorkerId, ids: &[ObjectId]) {
        if let Some(driver) = self.drivers.get_mut(&worker) {
            for id in ids {
                forget_one(&mut driver.owned, *id);
            }
        }
    }

    /// The driver of `driver.job` left: release everything the job created.
    pub(super) fn end_job(&mut self, driver: DriverJob) {
        let job = driver.job;
        if let Some(status) = self.jobs.get_mut(&job) {
            status.running = false;
            status.ended_at = Some(unix_now());
        }
        // Its tasks: queued ones never run, running ones lose their worker.
        let outputs: Vec<ObjectId> = self
            .tasks
            .values()
            .filter(|t| t.job == job && t.kind == TaskKind::Stateless)
            .map(|t| t.spec.return_id)
            .collect();
        for output in outputs {
            let _ = self.cancel(output);
        }
        let actors: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, a)| a.job == job && !a.spec.detached)
            .map(|(id, _)| *id)
            .collect();
        for actor in actors {
            self.end_actor(actor, format!("its job {job} ended (the driver exited)"));
        }
        let groups: Vec<u64> = self
            .placement_groups
            .iter()
            .filter(|(_, g)| g.job == job)
            .map(|(id, _)| *id)
            .collect();
        for group in groups {
            let _ = self.remove_placement_group(group);
        }
        for (id, count) in driver.owned {
            for _ in 0..count {
                self.release(id);
            }
        }
        self.forget_ended_jobs();
    }

    /// Keeps the job table bounded: the oldest ended jobs go first.
    fn forget_ended_jobs(&mut self) {
        let mut ended: Vec<(u64, JobId)> = self
            .jobs
            .iter()
            .filter_map(|(id, j)| j.ended_at.map(|at| (at, *id)))
            .collect();
        if ended.len() <= MAX_ENDED_JOBS {
            return;
        }
        ended.sort();
        for (_, id) in &ended[..ended.len() - MAX_ENDED_JOBS] {
            self.jobs.remove(id);
        }
    }
}

/// Drops one count of `id` from a reference ledger.
fn forget_one(ledger: &mut FxHashMap<ObjectId, u64>, id: ObjectId) {
    if let Some(count) = ledger.get_mut(&id) {
        *count -= 1;
        if *count == 0 {
            ledger.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::actors::ActorStatus;
    use super::super::test_support::*;
    use super::*;
    use crate::protocol::ActorSpec;

    #[test]
    fn a_driver_leaving_ends_its_job_and_releases_what_it_created() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(4.0), 1 << 20);
        let job = JobId(7);
        let driver = WorkerId((1 << 23) | 7);
        state.start_job(job, 42, "/bin/driver", None);
        state.drivers.insert(
            driver,
            DriverJob {
                job,
                log_to_driver: false,
                owned: FxHashMap::default(),
            },
        );
        let ours = ids.task("ours", cpus(1.0), Vec::new());
        let theirs = ids.task("theirs", cpus(1.0), Vec::new());
        let (ours_output, theirs_output) = (ours.return_id, theirs.return_id);
        state.submit(ours, job, None);
        state.schedule();
        let (our_worker, _) = state.start_one();
        state.submit_now(theirs);
        let (their_worker, _) = state.start_one();
        let actor = ids.actor(cpus(1.0), 3);
        let detached = ActorSpec {
            name: Some("kept".into()),
            detached: true,
            ..ids.actor(cpus(1.0), 0)
        };
        let (actor_id, detached_id) = (actor.actor_id, detached.actor_id);
        state.create_actor(actor, job, None).expect("created");
        state.create_actor(detached, job, None).expect("created");
        state.schedule();
        state.take_spawns();
        let put = ObjectId(ids.next());
        state.put_value(put, inline(b"driver's"));
        state.note_driver_refs(driver, &[put], &[]);

        state.worker_exited(driver, "its stream closed");
        state.schedule();
        let job_row = &state.jobs[&job];
        assert!(!job_row.running && job_row.ended_at.is_some());
        assert!(state.is_dead(actor_id));
        assert_eq!(
            state.actors[&detached_id].status,
            ActorStatus::Starting,
            "detached: kept"
        );
        assert!(
            !state.objects.contains_key(&put),
            "the driver's put is released"
        );
        // The running task's worker is stopped; the task ends cancelled when
        // its process is gone.
        assert!(state.take_effects().contains(&Did::Stop {
            worker: our_worker,
            node: HEAD.into()
        }));
        state.worker_exited(our_worker, "killed");
        assert_eq!(error_kind(&state.value(ours_output)), "Cancelled");
        assert_eq!(
            error_kind(&state.value(theirs_output)),
            "pending",
            "other jobs go on"
        );
        assert!(state.workers[&their_worker].lease.is_some());
    }

    #[test]
    fn the_job_of_a_worker_is_the_job_of_what_it_runs() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let job = JobId(7);
        state.start_job(job, 42, "/bin/driver", Some("ns".into()));
        state.submit(ids.task("f", cpus(1.0), Vec::new()), job, None);
        state.schedule();
        let (worker, _) = state.start_one();
        // (process, its job)
        let table = [(worker, job), (WorkerId(999), JOB)];
        for (process, expected) in table {
            assert_eq!(state.job_of(process, JOB), expected);
        }
        assert_eq!(state.namespace_of(job), "ns");
    }
}

//! Job executables on the head (Ray's runtime-env agent and GCS package
//! store, for one kind of package): which executable each worker runs, the
//! copies the head can serve to nodes (its own image for the embedded driver,
//! drivers' uploads, drivers' paths it can read with the right digest), and
//! what happens when a node cannot get one, or cannot start a process from
//! it: the job's tasks and actors placed there fail with
//! [`Error::ExecutableUnavailable`] instead of a worker being started again
//! and again.

use super::{Node, NodeState};
use crate::error::{Error, ExecutableProblem, Result};
use crate::ids::{JobId, WorkerId};
use crate::packaging::{self, AtPath, ExecutableCache, JobExecutable, Plan, OWN_IMAGE};
use crate::protocol::*;
use crate::runtime_env::{JobRuntimeEnv, WorkerEnvironment};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The executable a worker runs: `None` is this process's own image (the
/// embedded driver's), `Some` a joined driver's.
pub(super) type Code = Option<Arc<JobCode>>;

/// A joined driver's executable, and the job that offered it.
pub(super) struct JobCode {
    pub(super) job: JobId,
    pub(super) executable: JobExecutable,
    /// Its worker pools' key ([`code_key`]).
    key: String,
}

impl JobCode {
    pub(super) fn new(job: JobId, executable: JobExecutable) -> Self {
        JobCode {
            job,
            key: executable.pool_key(),
            executable,
        }
    }
}

/// What keys worker pools and queues of `code`: jobs with the same bytes
/// and runtime env share workers.
pub(super) fn code_key(code: &Code) -> &str {
    code.as_deref().map_or("", |c| c.key.as_str())
}

/// What the head keeps to serve executables.
pub(super) struct Executables {
    /// Copies fetched or uploaded to this node, by digest.
    pub(super) cache: ExecutableCache,
    /// Other files the head can serve, by digest: its own image, drivers'
    /// paths that hold the driver's bytes here.
    sources: Mutex<HashMap<String, PathBuf>>,
    /// The embedded driver's executable, hashed when a node first needs it.
    embedded: OnceLock<Arc<JobExecutable>>,
}

impl Executables {
    pub(super) fn new(cache: ExecutableCache) -> Self {
        Executables {
            cache,
            sources: Mutex::new(HashMap::new()),
            embedded: OnceLock::new(),
        }
    }

    /// A file holding the executable with `digest`, if the head has one.
    fn source(&self, digest: &str) -> Option<PathBuf> {
        self.cache
            .get(digest)
            .or_else(|| self.sources.lock().get(digest).cloned())
    }
}

impl Node {
    /// The embedded driver's executable as other nodes see it.
    pub(super) fn embedded_executable(&self) -> Result<Arc<JobExecutable>> {
        if let Some(executable) = self.executables.embedded.get() {
            return Ok(executable.clone());
        }
        let executable = JobExecutable::of_this_process(
            self.config.ship_executable,
            self.config.runtime_env.spec.clone(),
        )
        .map_err(|e| Error::runtime("cannot read this driver's executable", e))?;
        self.executables
            .sources
            .lock()
            .insert(executable.digest.clone(), PathBuf::from(OWN_IMAGE));
        Ok(self
            .executables
            .embedded
            .get_or_init(|| Arc::new(executable))
            .clone())
    }

    /// Whether the head can serve `executable`; a driver's path that holds
    /// its bytes here becomes a source.
    pub(super) fn query_executable(&self, executable: &JobExecutable) -> ExecutableAnswer {
        let mut present = self.executables.source(&executable.digest).is_some();
        if !present && matches!(packaging::check_path(executable), AtPath::Same) {
            self.executables
                .sources
                .lock()
                .insert(executable.digest.clone(), PathBuf::from(&executable.path));
            present = true;
        }
        ExecutableAnswer {
            present,
            limit: self.executables.cache.limit(),
        }
    }

    /// Stores a driver's upload in this node's cache.
    pub(super) async fn receive_executable(
        &self,
        mut upload: tonic::Streaming<ExecutableUpload>,
    ) -> std::result::Result<ExecutableAnswer, tonic::Status> {
        let Some(ExecutableUpload::Header(executable)) = upload.message().await? else {
            return Err(tonic::Status::invalid_argument(
                "an executable upload starts with its header",
            ));
        };
        let chunks = async_stream_of(upload);
        self.executables
            .cache
            .store(&executable, chunks)
            .await
            .map_err(|problem| tonic::Status::failed_precondition(problem.to_string()))?;
        Ok(self.query_executable(&executable))
    }

    /// The file to stream to a node asking for `digest`.
    pub(super) fn executable_source(&self, digest: &str) -> Option<PathBuf> {
        self.executables.source(digest)
    }

    /// Keeps the embedded driver's working-directory archive where nodes
    /// fetch it from and this node unpacks it.
    pub(super) fn serve_embedded_working_dir(&self) -> Result<()> {
        let (Some(archive), Some(bytes)) = (
            &self.config.runtime_env.spec.working_dir,
            &self.config.runtime_env.archive,
        ) else {
            return Ok(());
        };
        use tokio_stream::StreamExt;
        let chunks = packaging::chunks_of(bytes).map(Ok);
        let file = JobExecutable::archive_file(archive);
        self.runtime
            .block_on(self.executables.cache.store(&file, chunks))
            .map(drop)
            .map_err(|reason| Error::ExecutableUnavailable {
                node: self.config.node_id.clone(),
                reason,
            })
    }

    /// The environment a worker of `runtime_env` starts with on this node.
    fn local_environment(
        &self,
        runtime_env: &JobRuntimeEnv,
    ) -> std::result::Result<WorkerEnvironment, ExecutableProblem> {
        let source = runtime_env
            .working_dir
            .as_ref()
            .and_then(|archive| self.executables.source(&archive.digest));
        self.executables.cache.environment(runtime_env, source)
    }

    /// Starts a worker of the embedded driver's own image on this node.
    pub(super) fn spawn_embedded_worker(&self, worker: WorkerId, gpu_ids: Vec<u32>) {
        match self.local_environment(&self.config.runtime_env.spec) {
            Ok(environment) => self.spawn_worker(worker, gpu_ids, OWN_IMAGE, &environment),
            Err(reason) => self.worker_not_started(
                worker,
                Error::ExecutableUnavailable {
                    node: self.config.node_id.clone(),
                    reason,
                },
            ),
        }
    }

    /// Starts a worker of a driver's executable on this node: from the
    /// driver's path, or from a copy the head holds.
    pub(super) fn spawn_job_worker(
        &self,
        worker: WorkerId,
        gpu_ids: Vec<u32>,
        executable: &JobExecutable,
    ) {
        let planned = match self.executables.cache.plan(executable) {
            Ok(Plan::Run(path)) => Ok(path),
            Ok(Plan::Fetch) => self.executables.source(&executable.digest).ok_or_else(|| {
                ExecutableProblem::FetchFailed {
                    message: "the head holds no copy (the driver did not upload it)".into(),
                }
            }),
            Err(problem) => Err(problem),
        }
        .and_then(|path| Ok((path, self.local_environment(&executable.runtime_env)?)));
        match planned {
            Ok((path, environment)) => {
                self.spawn_worker(worker, gpu_ids, &path.to_string_lossy(), &environment)
            }
            Err(reason) => self.worker_not_started(
                worker,
                Error::ExecutableUnavailable {
                    node: self.config.node_id.clone(),
                    reason,
                },
            ),
        }
    }

    /// A node could not start `worker`: remember why for its job on that node
    /// and fail what waits for that worker.
    pub(super) fn worker_not_started(&self, worker: WorkerId, error: Error) {
        tracing::warn!("{error}");
        self.with_state(|state| state.executable_unavailable(worker, error));
    }
}

impl NodeState {
    /// What the process behind `worker` (a worker or a joined driver) runs;
    /// the embedded driver, which has no record, runs this process's image.
    pub(super) fn code_of(&self, worker: WorkerId) -> Code {
        self.workers.get(&worker).and_then(|w| w.code.clone())
    }

    pub(super) fn executable_unavailable(&mut self, worker: WorkerId, error: Error) {
        let Some(record) = self.workers.get(&worker) else {
            return;
        };
        self.unavailable.insert(
            (record.node.clone(), failure_key(&record.code)),
            error.clone(),
        );
        if let Some(actor) = record.actor {
            self.actor_failed(actor, error.clone());
        }
        self.remove_worker(worker, &error.to_string());
    }

    /// Why `code` cannot run on `node`, if a worker of it failed to start there.
    pub(super) fn unavailable_on(&self, node: &str, code: &Code) -> Option<Error> {
        if self.unavailable.is_empty() {
            return None;
        }
        self.unavailable
            .get(&(node.to_string(), failure_key(code)))
            .cloned()
    }

    /// A node that leaves takes what was learned about it along.
    pub(super) fn forget_unavailable_on(&mut self, node: &str) {
        self.unavailable.retain(|(n, _), _| n != node);
    }
}

/// Whether a node can get an executable depends on the job offering it (its
/// path, its ship mode, what its file holds now), so failures are per job;
/// `None` is the embedded driver's image.
fn failure_key(code: &Code) -> Option<JobId> {
    code.as_deref().map(|c| c.job)
}

/// The chunks of an upload after its header.
fn async_stream_of(
    upload: tonic::Streaming<ExecutableUpload>,
) -> impl tokio_stream::Stream<Item = std::result::Result<Chunk, String>> + Unpin {
    use tokio_stream::StreamExt;
    upload.map(|message| match message {
        Ok(ExecutableUpload::Chunk(chunk)) => Ok(chunk),
        Ok(ExecutableUpload::Header(_)) => Err("a second header in one upload".to_string()),
        Err(status) => Err(status.message().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::packaging::ShipExecutable;
    use crate::resources::CPU;

    /// A task only `n2` can run.
    fn on_n2(ids: &Ids) -> TaskSpec {
        ids.task("f", res(&[(CPU, 1.0), ("n2", 1.0)]), Vec::new())
    }

    /// The nodes workers were started on.
    fn nodes(spawned: Vec<(WorkerId, String)>) -> Vec<String> {
        spawned.into_iter().map(|(_, node)| node).collect()
    }

    fn fetch_failed() -> Error {
        Error::ExecutableUnavailable {
            node: "n2".into(),
            reason: ExecutableProblem::FetchFailed {
                message: "the head holds no copy".into(),
            },
        }
    }

    /// What a node cannot run is remembered per node and per job: that
    /// job's work placed there fails at once, without another worker, while
    /// other nodes and other jobs' code are untouched; the node's leaving
    /// forgets it (one that joins again under its id may have the file).
    #[test]
    fn an_executable_a_node_cannot_get_fails_that_jobs_work_there_until_it_leaves() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let _n2 = state.join("n2", res(&[(CPU, 1.0), ("n2", 1.0)]));
        let first = on_n2(&ids);
        let first_output = first.return_id;
        state.submit_now(first);
        let spawned = state.take_spawns();
        let [(worker, node)] = &spawned[..] else {
            panic!("one worker is started, got {spawned:?}");
        };
        assert_eq!(node, "n2");
        let worker = *worker;
        state.executable_unavailable(worker, fetch_failed());
        state.schedule();
        let failure = |value: Option<Result<ObjectBlob>>| match value {
            Some(Err(error @ Error::ExecutableUnavailable { .. })) => error.to_string(),
            other => panic!("expected the executable's failure, got {other:?}"),
        };
        assert!(failure(state.value(first_output)).contains("no copy"));

        let second = on_n2(&ids);
        let second_output = second.return_id;
        state.submit_now(second);
        assert!(failure(state.value(second_output)).contains("n2"));
        assert!(
            state.take_spawns().is_empty(),
            "no second worker is started there"
        );

        let other_job: Code = Some(Arc::new(JobCode::new(
            JobId(7),
            JobExecutable {
                path: "/opt/driver".into(),
                digest: "ab".into(),
                size: 1,
                ship: ShipExecutable::default(),
                runtime_env: Default::default(),
            },
        )));
        assert!(state.unavailable_on("n2", &None).is_some());
        assert!(state.unavailable_on("n2", &other_job).is_none());
        assert!(state.unavailable_on(HEAD, &None).is_none());
        state.submit_now(ids.task("f", cpus(1.0), Vec::new()));
        assert_eq!(
            nodes(state.take_spawns()),
            [HEAD],
            "the head still starts one"
        );

        assert!(state.node_died("n2", "it left"));
        assert!(state.unavailable_on("n2", &None).is_none());
        let _n2_again = state.join("n2", res(&[(CPU, 1.0), ("n2", 1.0)]));
        let third = on_n2(&ids);
        let third_output = third.return_id;
        state.submit_now(third);
        assert!(state.value(third_output).is_none(), "not failed at once");
        assert_eq!(
            nodes(state.take_spawns()),
            ["n2"],
            "after rejoining, n2 is asked to start a worker again"
        );
    }
}

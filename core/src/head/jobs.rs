//! The job table (Ray's GCS job manager): every driver that has used the
//! cluster, the embedded driver first, with its executable and whether it is
//! still connected.

use super::worker_pool::WorkerRecord;
use super::Node;
use crate::ids::WorkerId;
use crate::protocol::*;
use std::collections::VecDeque;
use tokio::sync::mpsc;

impl Node {
    /// A driver joined from outside: it gets a record (to route replies) but no
    /// work, and its executable is what new workers run. Its id must be free:
    /// a connection that claimed a live worker's or driver's id would receive
    /// that process's replies.
    pub(super) fn register_driver(
        &self,
        id: WorkerId,
        pid: u32,
        executable: String,
        sender: mpsc::UnboundedSender<NodeToWorker>,
    ) -> std::result::Result<WorkerId, tonic::Status> {
        self.with_state(|state, _| {
            if state.workers.contains_key(&id) {
                return Err(tonic::Status::already_exists(format!(
                    "{id} belongs to a live process of this cluster"
                )));
            }
            state.jobs.push(job(id, pid, &executable));
            state.worker_executable = Some(executable.clone());
            state.workers.insert(
                id,
                WorkerRecord {
                    node: format!("driver-{pid}"),
                    is_driver: true,
                    executable,
                    pid: None,
                    sender: Some(sender),
                    gpu_ids: Vec::new(),
                    actor: None,
                    lease: None,
                    assigned: VecDeque::new(),
                },
            );
            Ok(id)
        })
    }
}

/// A job-table entry for a driver starting now.
pub(super) fn job(id: WorkerId, pid: u32, executable: &str) -> JobStatus {
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    JobStatus {
        job_id: id.to_string(),
        driver_pid: pid,
        executable: executable.to_string(),
        started_at,
        running: true,
    }
}

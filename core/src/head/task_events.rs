//! Task events: the latest state of recent tasks, for `oxray list tasks`,
//! `oxray summary tasks`, the dashboard and `/metrics` (Ray keeps the same in
//! its GCS task event table).
//!
//! The head records each task's transitions (submitted, waiting for
//! arguments, queued, running, finished or failed) into one row per task, in
//! a ring of bounded size: when it is full the oldest row goes, so memory
//! stays fixed however many tasks run. An update is a hash lookup and a few
//! field writes under the lock the head already holds, which keeps it off
//! the task path's cost (`oxray microbenchmark` within noise). The size is
//! `OXRAY_TASK_EVENTS_MAX_NUM` (default 10 000; 0 turns recording off), as
//! Ray's `RAY_task_events_max_num_task_in_gcs`.

use crate::ids::TaskId;
use crate::protocol::TaskRow;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// Environment variable that sizes the ring.
const TASK_EVENTS_MAX_ENV: &str = "OXRAY_TASK_EVENTS_MAX_NUM";
const DEFAULT_MAX_TASKS: usize = 10_000;

/// The ring of task rows.
pub(crate) struct TaskEvents {
    capacity: usize,
    /// Rows in submission order; `rows[0]` has sequence number `first`.
    rows: VecDeque<TaskRow>,
    first: u64,
    /// A task's sequence number, while its row is in the ring.
    index: FxHashMap<TaskId, u64>,
}

impl TaskEvents {
    pub fn new(capacity: usize) -> Self {
        TaskEvents {
            capacity,
            rows: VecDeque::new(),
            first: 0,
            index: FxHashMap::default(),
        }
    }

    /// Sized by `OXRAY_TASK_EVENTS_MAX_NUM`, else the default.
    pub fn from_env() -> Self {
        let capacity = std::env::var(TASK_EVENTS_MAX_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_TASKS);
        TaskEvents::new(capacity)
    }

    /// Records a new task; `row` is only built when recording is on.
    pub fn submitted(&mut self, row: impl FnOnce() -> TaskRow) {
        if self.capacity == 0 {
            return;
        }
        if self.rows.len() == self.capacity {
            if let Some(oldest) = self.rows.pop_front() {
                if self.index.get(&oldest.task_id) == Some(&self.first) {
                    self.index.remove(&oldest.task_id);
                }
            }
            self.first += 1;
        }
        let row = row();
        self.index
            .insert(row.task_id, self.first + self.rows.len() as u64);
        self.rows.push_back(row);
    }

    /// Changes a task's row, if it is still in the ring.
    pub fn update(&mut self, task: TaskId, change: impl FnOnce(&mut TaskRow)) {
        let Some(sequence) = self.index.get(&task) else {
            return;
        };
        if let Some(row) = self.rows.get_mut((sequence - self.first) as usize) {
            change(row);
        }
    }

    /// The rows, oldest first.
    pub fn rows(&self) -> Vec<TaskRow> {
        self.rows.iter().cloned().collect()
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{TaskState, TaskType};
    use crate::resources::ResourceSet;

    fn row(id: u64) -> TaskRow {
        TaskRow {
            task_id: TaskId(id),
            name: format!("f{id}"),
            task_type: TaskType::NormalTask,
            state: TaskState::PendingNodeAssignment,
            actor_id: None,
            node_id: None,
            worker_id: None,
            worker_pid: None,
            required_resources: ResourceSet::default(),
            attempts: 0,
            submitted_at_ms: id,
            started_at_ms: None,
            finished_at_ms: None,
            error: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_rows_and_updates_them_in_place() {
        let mut events = TaskEvents::new(3);
        for id in 1..=5 {
            events.submitted(|| row(id));
        }
        let ids: Vec<u64> = events.rows().iter().map(|r| r.task_id.0).collect();
        assert_eq!(ids, vec![3, 4, 5]);
        events.update(TaskId(4), |r| {
            r.state = TaskState::Failed;
            r.error = Some("boom".into());
        });
        // An evicted task's update is dropped, not misapplied.
        events.update(TaskId(1), |r| r.state = TaskState::Running);
        let rows = events.rows();
        assert_eq!(rows[1].state, TaskState::Failed);
        assert_eq!(rows[1].error.as_deref(), Some("boom"));
        assert!(rows
            .iter()
            .all(|r| r.task_id == TaskId(4) || r.state == TaskState::PendingNodeAssignment));
    }

    #[test]
    fn capacity_zero_records_nothing() {
        let mut events = TaskEvents::new(0);
        events.submitted(|| panic!("no row is built when recording is off"));
        assert!(events.rows().is_empty());
    }
}

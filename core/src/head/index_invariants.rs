//! The head's indexes (idle task workers by what they run, workers starting
//! and per node, nodes with free resources and their positions, actors with
//! calls to send) replace scans over every worker, node and actor. Each must
//! say exactly what the scan said, after every transition: these tests drive
//! the state through sequences of events (task lifecycle, cancel, lending
//! while blocked in `get`, worker exits, actor restart and death, node death,
//! placement groups, job end) and compare each index with a full scan after
//! every step.

use super::actors::ActorStatus;
use super::jobs::DriverJob;
use super::test_support::*;
use super::NodeState;
use crate::ids::{ActorId, JobId, ObjectId, TaskId, WorkerId};
use crate::placement::PlacementStrategy;
use crate::protocol::{HeadToNode, Invocation, NodeToWorker, TaskSpec};
use crate::resources::{SchedulingStrategy, CPU};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc::UnboundedReceiver;

/// A head state with the handles a sequence of events refers to by index.
struct World {
    state: NodeState,
    ids: Ids,
    /// What each connected worker was sent.
    inboxes: FxHashMap<WorkerId, UnboundedReceiver<NodeToWorker>>,
    /// (task, its output) in submission order.
    tasks: Vec<(TaskId, ObjectId)>,
    actors: Vec<ActorId>,
    /// Control streams of joined nodes, kept open.
    nodes: Vec<UnboundedReceiver<HeadToNode>>,
    /// A worker a sequence refers to later.
    marked: Option<WorkerId>,
}

type Step = (&'static str, fn(&mut World));

impl World {
    fn new() -> World {
        World {
            state: NodeState::for_test(cpus(2.0), 1 << 20),
            ids: Ids::new(),
            inboxes: FxHashMap::default(),
            tasks: Vec::new(),
            actors: Vec::new(),
            nodes: Vec::new(),
            marked: None,
        }
    }

    fn submit(&mut self, spec: TaskSpec) {
        self.tasks.push((spec.task_id, spec.return_id));
        self.state.submit_now(spec);
    }

    fn task(&mut self, amount: f64) {
        let spec = self.ids.task("f", cpus(amount), Vec::new());
        self.submit(spec);
    }

    /// Every worker the head asked for starts and says hello.
    fn start_spawned(&mut self) {
        for (worker, _) in self.state.take_spawns() {
            let inbox = self.state.connect(worker);
            self.inboxes.insert(worker, inbox);
        }
    }

    fn worker_of(&self, task: usize) -> WorkerId {
        self.state.tasks[&self.tasks[task].0]
            .worker
            .expect("the task runs")
    }

    fn finish(&mut self, task: usize) {
        let worker = self.worker_of(task);
        self.state
            .finish(worker, self.tasks[task].0, Ok(inline(b"")));
    }

    fn cancel(&mut self, task: usize) {
        self.state.cancel(self.tasks[task].1).expect("cancelled");
        self.state.schedule();
    }

    fn exit(&mut self, worker: WorkerId) {
        self.state.worker_exited(worker, "killed by signal 9");
        self.state.schedule();
    }

    fn actor(&mut self, max_restarts: u32) {
        let spec = self.ids.actor(cpus(1.0), max_restarts);
        self.actors.push(spec.actor_id);
        self.state.create_actor(spec, JOB, None).expect("created");
        self.state.schedule();
    }

    fn actor_worker(&self, actor: usize) -> WorkerId {
        self.state.actors[&self.actors[actor]]
            .worker
            .expect("placed")
    }

    /// The actor's worker runs the constructor it was sent; it succeeds.
    fn construct(&mut self, actor: usize) {
        let worker = self.actor_worker(actor);
        let runs = executed(self.inboxes.get_mut(&worker).expect("connected"));
        let create = runs
            .iter()
            .find(|run| matches!(run.invocation, Invocation::ActorCreate { .. }))
            .expect("the constructor was sent");
        self.state.finish(worker, create.task_id, Ok(inline(b"")));
    }

    fn call(&mut self, actor: usize) {
        let spec = self.ids.call(self.actors[actor], "add");
        self.submit(spec);
    }

    fn group_task(&mut self) {
        let mut spec = self.ids.task("g", cpus(1.0), Vec::new());
        spec.strategy = SchedulingStrategy::PlacementGroup {
            group: 1,
            bundle: Some(0),
        };
        self.submit(spec);
    }

    /// Panics unless every index equals what a full scan finds.
    fn check(&self, step: &str) {
        let state = &self.state;
        state.task_workers.assert_matches_scan(&state.workers, step);
        state.pool.assert_indexes_match_scan(step);
        let slots = state.workers.keys().map(|w| (*w, state.pipeline_slot(*w)));
        state.pipeline.assert_matches_scan(slots, step);
        // Every event ends with `schedule`, which sends the calls of every
        // noted actor: a live actor still holding calls was never noted.
        for (id, actor) in &state.actors {
            assert!(
                actor.status != ActorStatus::Alive || actor.pending.is_empty(),
                "{id} is alive with calls unsent after {step}"
            );
        }
        assert!(state.dead_actors.len() <= state.dead_actors.capacity());
        for (id, _) in state.dead_actors.iter() {
            assert!(
                !state.actors.contains_key(id),
                "{id} is both alive and dead after {step}"
            );
        }
    }
}

fn run(sequence: &str, steps: &[Step]) {
    let mut world = World::new();
    world.check("start");
    for (name, step) in steps {
        step(&mut world);
        world.check(&format!("{sequence}: {name}"));
    }
}

#[test]
fn task_workers_through_leases_finishes_retries_and_exits() {
    let steps: [Step; 9] = [
        ("three 1-CPU tasks on 2 CPUs", |w| {
            (0..3).for_each(|_| w.task(1.0))
        }),
        ("workers start", |w| w.start_spawned()),
        ("more start for the rest", |w| w.start_spawned()),
        ("task 1 ends: its worker takes task 2", |w| w.finish(1)),
        ("task 0 ends: its worker goes idle", |w| w.finish(0)),
        ("task 2's worker exits mid-task", |w| {
            let worker = w.worker_of(2);
            w.exit(worker)
        }),
        ("a task for the idle worker", |w| w.task(1.0)),
        ("it ends", |w| w.finish(3)),
        ("an idle worker exits", |w| {
            let idle = *w
                .inboxes
                .keys()
                .find(|id| w.state.workers.get(id).is_some_and(|r| r.is_idle()))
                .expect("one idle");
            w.exit(idle)
        }),
    ];
    run("tasks", &steps);
}

#[test]
fn a_worker_stopped_for_a_cancel_is_never_idle_again() {
    let steps: [Step; 7] = [
        ("a task", |w| w.task(1.0)),
        ("its worker starts", |w| w.start_spawned()),
        ("it is cancelled while running", |w| {
            w.marked = Some(w.worker_of(0));
            w.cancel(0)
        }),
        ("its end crosses the stop signal", |w| w.finish(0)),
        ("the next task", |w| w.task(1.0)),
        ("gets a worker of its own", |w| {
            w.start_spawned();
            assert_ne!(Some(w.worker_of(1)), w.marked);
        }),
        ("the stopped worker's exit is reported", |w| {
            let stopped = w.marked.expect("marked");
            w.exit(stopped)
        }),
    ];
    run("cancel", &steps);
}

#[test]
fn a_worker_blocked_in_get_lends_and_takes_back() {
    let steps: [Step; 8] = [
        ("an outer task takes both CPUs", |w| w.task(2.0)),
        ("its worker starts", |w| w.start_spawned()),
        ("an inner task waits", |w| w.task(1.0)),
        ("the outer one blocks in get", |w| {
            let worker = w.worker_of(0);
            w.state.lend_out(worker, true);
            w.state.schedule();
        }),
        ("the inner one's worker starts", |w| w.start_spawned()),
        ("the inner one ends", |w| w.finish(1)),
        ("the outer one takes its CPUs back", |w| {
            let worker = w.worker_of(0);
            w.state.lend_out(worker, false);
            w.state.schedule();
        }),
        ("the outer one ends", |w| w.finish(0)),
    ];
    run("lend", &steps);
}

#[test]
fn actors_through_calls_restart_and_death() {
    let steps: [Step; 10] = [
        ("an actor that may restart once", |w| w.actor(1)),
        ("its worker starts", |w| w.start_spawned()),
        ("a call while it starts", |w| w.call(0)),
        ("its constructor ends", |w| w.construct(0)),
        ("a call while it is alive", |w| w.call(0)),
        ("its process dies", |w| {
            let worker = w.actor_worker(0);
            w.exit(worker)
        }),
        ("a call while it restarts", |w| w.call(0)),
        ("its new worker starts", |w| w.start_spawned()),
        ("its constructor ends again", |w| w.construct(0)),
        ("it is killed", |w| {
            w.state.kill_actor(w.actors[0]).expect("killed");
            w.state.schedule();
        }),
    ];
    run("actors", &steps);
}

#[test]
fn a_node_dies_with_task_workers_and_an_actor_on_it() {
    let steps: [Step; 7] = [
        ("node b joins", |w| {
            let control = w.state.join("b", cpus(4.0));
            w.nodes.push(control);
            w.state.schedule();
        }),
        ("tasks fill the head and reach b", |w| {
            (0..4).for_each(|_| w.task(1.0))
        }),
        ("workers start", |w| w.start_spawned()),
        ("more workers start", |w| w.start_spawned()),
        ("an actor lands where there is room", |w| w.actor(1)),
        ("a task on b ends: its worker goes idle", |w| {
            let on_b = (0..4).find(|t| {
                let worker = w.state.tasks[&w.tasks[*t].0].worker;
                worker.is_some_and(|id| w.state.workers[&id].node == "b")
            });
            w.finish(on_b.expect("a task runs on b"))
        }),
        ("b dies", |w| {
            assert!(w.state.node_died("b", "gone"));
            w.state.schedule();
        }),
    ];
    run("node death", &steps);
}

#[test]
fn placement_group_bundles_are_reserved_used_and_given_back() {
    let steps: [Step; 7] = [
        ("a group of one 1-CPU bundle", |w| {
            w.state
                .create_placement_group(1, vec![cpus(1.0)], PlacementStrategy::Pack, JOB)
                .expect("feasible");
            w.state.schedule();
        }),
        ("a task in the bundle", |w| w.group_task()),
        ("its worker starts", |w| w.start_spawned()),
        ("a second one waits for the bundle", |w| w.group_task()),
        ("a task outside takes the other CPU", |w| w.task(1.0)),
        ("its worker starts", |w| w.start_spawned()),
        ("the group is removed", |w| {
            w.state.remove_placement_group(1).expect("removed");
            w.state.schedule();
            let stopped = w.worker_of(0);
            w.exit(stopped);
        }),
    ];
    run("placement group", &steps);
}

#[test]
fn a_job_ends_with_its_tasks_and_actors() {
    const DRIVER: WorkerId = WorkerId((1 << 23) | 7);
    const THEIRS: JobId = JobId(7);
    let steps: [Step; 5] = [
        ("a driver's job", |w| {
            w.state.start_job(THEIRS, 42, "/bin/driver", None);
            w.state.drivers.insert(DRIVER, DriverJob::for_test(THEIRS));
        }),
        ("its tasks and an actor", |w| {
            for _ in 0..3 {
                let spec = w.ids.task("theirs", cpus(1.0), Vec::new());
                w.tasks.push((spec.task_id, spec.return_id));
                w.state.submit(spec, THEIRS, None);
            }
            let spec = w.ids.actor(cpus(0.5), 0);
            w.actors.push(spec.actor_id);
            w.state.create_actor(spec, THEIRS, None).expect("created");
            w.state.schedule();
        }),
        ("workers start", |w| w.start_spawned()),
        ("the driver exits", |w| w.exit(DRIVER)),
        ("the stopped workers' exits are reported", |w| {
            let stopping: Vec<WorkerId> = (w.state.workers.iter())
                .filter(|(_, r)| r.stopping)
                .map(|(id, _)| *id)
                .collect();
            assert!(!stopping.is_empty(), "its running tasks were cancelled");
            stopping.into_iter().for_each(|worker| w.exit(worker));
            assert!(w.state.workers.values().all(|r| r.lease.is_none()));
            assert_eq!(w.state.free(HEAD, CPU), 2.0);
        }),
    ];
    run("job end", &steps);
}

/// A finish reported twice (the second for a task the head has forgotten)
/// ends no lease twice and lists the worker as idle once.
#[test]
fn a_late_finish_for_a_forgotten_task_changes_nothing() {
    let steps: [Step; 4] = [
        ("a task", |w| w.task(1.0)),
        ("its worker starts", |w| w.start_spawned()),
        ("it ends", |w| w.finish(0)),
        ("the same end is reported again", |w| {
            let worker = *w.inboxes.keys().next().unwrap();
            w.state.task_finished(worker, w.tasks[0].0, Ok(inline(b"")));
            w.state.schedule();
        }),
    ];
    run("late finish", &steps);
}

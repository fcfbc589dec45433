//! Worker processes.
//!
//! A worker is the driver's own executable, started again with a few
//! environment variables set. A function placed in `.init_array` runs before
//! `main` in every process of that executable; in a worker it connects to the
//! node, serves tasks until the node closes the stream, and exits — so `main`
//! (or the test harness) never runs there. That is what lets a user's binary,
//! an example or a test binary serve its own remote functions with no extra
//! entry point.
//!
//! Inside a worker, one thread runs tasks in order while the async side keeps
//! the stream moving. The task thread's own API calls (`get`, nested `remote`,
//! `put`) go through the stream client, which sends them on the same stream.
//!
//! | file | concept |
//! |---|---|
//! | `launch.rs` | starting a worker process (environment, GPU visibility, death with its parent) and reaping it |
//! | `entry.rs` | the `.init_array` entry that turns a process into a worker |
//! | `client.rs` | the stream to the head and the API backend of workers and joined drivers (Ray's core worker) |
//! | `outbound.rs` | the stream of messages to the head, releases gathered and each run of reference changes sent as one message |
//! | `local_refs.rs` | how many references to each object this process holds; the head hears only of the first and the last |
//! | `owned_values.rs` | small values a worker or joined driver put, kept for its own `get`s (Ray's in-process memory store) |
//! | `ready_objects.rs` | the objects known ready here, so a `wait` over them needs no request |
//! | `task_queue.rs` | the tasks sent to the worker and not yet started; the head may withdraw one |
//! | `actor_calls.rs` | the actor's end of direct calls: a service callers send calls to without the head |
//! | `actor_submitter.rs` | the caller's end: where each actor lives, calls sent to it directly, their results |
//! | `executor.rs` | the task thread: runs functions, constructors and methods in order |
//! | `log_capture.rs` | a daemon worker's output: to its log file and, line by line, to its job's driver |

mod actor_calls;
mod actor_submitter;
mod client;
mod entry;
mod executor;
mod launch;
mod local_refs;
mod log_capture;
mod outbound;
mod owned_values;
mod ready_objects;
mod spawner;
mod task_queue;

pub(crate) use client::{connect_driver, print_log};
pub(crate) use entry::keep_worker_entry_linked;
pub use executor::get_gpu_ids;
pub use launch::process_alive;
pub(crate) use launch::{describe_exit, kill_process, WorkerLaunch};
pub use spawner::on_spawner_thread;

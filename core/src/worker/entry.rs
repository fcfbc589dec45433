//! The worker entry: a function in `.init_array` that runs before `main` in
//! every process of an executable linking oxray. In a process started as a
//! worker it serves tasks until the head closes the stream, then exits, so
//! `main` never runs there.

use super::actor_calls::CallListener;
use super::client::{Connection, Identity};
use super::executor::execute_tasks;
use super::launch::{NODE_ADDRESS_ENV, NODE_ID_ENV, OBJECT_SERVER_ENV, SESSION_ENV, WORKER_ID_ENV};
use super::task_queue::TaskQueue;
use crate::auth::TOKEN_ENV;
use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::protocol::*;
use crate::runtime;
use std::sync::Arc;

#[used]
#[link_section = ".init_array"]
static WORKER_ENTRY: extern "C" fn() = enter_worker_mode_if_asked;

/// Referenced from `init` so the linker keeps the object file holding
/// [`WORKER_ENTRY`] in every executable that uses oxray.
pub(crate) fn keep_worker_entry_linked() {
    std::hint::black_box(&WORKER_ENTRY);
}

extern "C" fn enter_worker_mode_if_asked() {
    let Ok(address) = std::env::var(NODE_ADDRESS_ENV) else {
        return;
    };
    let code = match run_worker(&address) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("oxray worker: {error}");
            1
        }
    };
    std::process::exit(code);
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| Error::Runtime(format!("{name} is not set")))
}

/// The IP of this worker's node: the host of its object server, which the
/// node binds to the address it advertises.
fn node_ip(object_server: &str) -> Result<std::net::IpAddr> {
    object_server
        .parse::<std::net::SocketAddr>()
        .map(|address| address.ip())
        .map_err(|_| {
            Error::Runtime(format!(
                "{OBJECT_SERVER_ENV}={object_server} is not an IP address and port"
            ))
        })
}

fn run_worker(address: &str) -> Result<()> {
    let worker_id: u64 = env(WORKER_ID_ENV)?
        .parse()
        .map_err(|_| Error::Runtime(format!("{WORKER_ID_ENV} is not a number")))?;
    let identity = Identity {
        origin: worker_id,
        session: env(SESSION_ENV)?,
        node_id: env(NODE_ID_ENV)?,
        object_server: Some(env(OBJECT_SERVER_ENV)?),
        token: env(TOKEN_ENV)?,
    };
    let node_ip = node_ip(identity.object_server.as_deref().unwrap_or_default())?;
    let calls = CallListener::bind(node_ip)?;
    let hello = WorkerToNode::Hello {
        worker_id: WorkerId(worker_id),
        pid: std::process::id(),
        call_address: Some(calls.address.clone()),
    };
    let token = identity.token.clone();
    crate::spill::configure_from_env();
    let connection = Connection::open(address, identity, hello)?;
    runtime::install(connection.client.clone());
    if std::env::var_os(super::log_capture::LOG_TO_DRIVER_ENV).is_some() {
        super::log_capture::capture(&connection.client)
            .map_err(|e| Error::runtime("cannot capture the worker's output", e))?;
    }

    let tasks = Arc::new(TaskQueue::default());
    {
        let _runtime = connection.enter();
        calls.serve(tasks.clone(), Arc::downgrade(&connection.client), &token)?;
    }
    let executor = {
        let client = connection.client.clone();
        let tasks = tasks.clone();
        std::thread::Builder::new()
            .name("oxray-task".into())
            .spawn(move || execute_tasks(&client, &tasks))
            .map_err(|e| Error::runtime("cannot start the task thread", e))?
    };
    connection.serve(Some(&tasks));
    // The node closed the stream: shutdown, or the node is gone.
    drop(executor);
    Ok(())
}

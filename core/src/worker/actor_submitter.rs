//! The caller's end of direct actor calls (Ray's actor task submitter): a
//! worker or joined driver sends its calls to an actor straight to the
//! actor's worker, which returns each result on the same stream, so a call
//! costs one round trip between the two processes instead of two through
//! the head.
//!
//! Per actor a caller has a route. The first call asks the head where the
//! actor lives (`ResolveActor`); until it answers, calls wait here in order.
//! Then they go on a stream of their own to the actor's worker (`Direct`),
//! or, if the actor is dead, to the head, which fails them (`ThroughHead`).
//! Every call is also told to the head, on this process's stream to it and
//! ahead of anything that could use its result (`DirectCallSent`), and so
//! is every result as it arrives (`DirectCallsFinished`): the head keeps the
//! object for any other process that reads it, retries the call if the
//! actor's worker dies, and shows it in the state API.
//!
//! When the stream to the actor breaks (its worker died), the calls it had
//! not answered are the head's to retry or fail, their results are read
//! from the head, and the route is asked for again, excluding that worker.
//! Calls keep their order: those retried after a restart are sent by the
//! head as the actor turns alive, before the head answers the new route.

use super::client::WorkerClient;
use crate::auth::AttachToken;
use crate::error::{Error, Result};
use crate::head::generated::actor_calls_client::ActorCallsClient;
use crate::head_link;
use crate::ids::{ActorId, ObjectId, TaskId, WorkerId};
use crate::protocol::*;
use crate::wire::MAX_MESSAGE_BYTES;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

pub(super) struct ActorSubmitter {
    /// `None` once the head is gone: every call then fails as any request
    /// to the head does.
    routes: Mutex<Option<HashMap<ActorId, Route>>>,
    /// Results of calls sent directly that this process still holds a
    /// reference to, while pending and once they arrived.
    results: Mutex<HashMap<ObjectId, Slot>>,
    arrived: Condvar,
}

impl Default for ActorSubmitter {
    fn default() -> Self {
        ActorSubmitter {
            routes: Mutex::new(Some(HashMap::new())),
            results: Mutex::default(),
            arrived: Condvar::new(),
        }
    }
}

enum Route {
    /// The head is asked where the actor lives; calls wait, in order.
    Resolving(Vec<HeldCall>),
    Direct(Link),
    /// The actor is dead (or serves no direct calls): calls go to the head.
    ThroughHead,
}

struct HeldCall {
    call: DirectCall,
    return_id: ObjectId,
}

/// An open stream to an actor's worker.
struct Link {
    worker: WorkerId,
    calls: mpsc::UnboundedSender<DirectCall>,
    /// Calls sent and not answered yet: task → its result's id.
    in_flight: Arc<Mutex<HashMap<TaskId, ObjectId>>>,
}

enum Slot {
    /// `waited`: a `get` sleeps until this one arrives, so its arrival
    /// wakes it (arrivals nobody waits for wake nobody).
    Pending {
        waited: bool,
    },
    Ready(Result<ObjectBlob>),
}

impl ActorSubmitter {
    fn expect(&self, id: ObjectId) {
        self.results
            .lock()
            .insert(id, Slot::Pending { waited: false });
    }

    /// The result arrived: kept for this process's `get`s when small (a
    /// value in shared memory is read through the head, which knows where
    /// it lives).
    fn fulfil(&self, id: ObjectId, outcome: Result<ObjectBlob>) {
        let mut results = self.results.lock();
        let Some(slot) = results.get_mut(&id) else {
            return;
        };
        let waited = matches!(slot, Slot::Pending { waited: true });
        match outcome {
            Ok(ObjectBlob {
                payload: Payload::Shared { .. },
                ..
            }) => {
                results.remove(&id);
            }
            outcome => *slot = Slot::Ready(outcome),
        }
        if waited {
            self.arrived.notify_all();
        }
    }

    /// `ids` will be read from the head.
    fn ask_head(&self, ids: impl IntoIterator<Item = ObjectId>) {
        let mut results = self.results.lock();
        for id in ids {
            results.remove(&id);
        }
        self.arrived.notify_all();
    }

    /// The head is gone, and with it the connection's runtime that read the
    /// actors' streams: a `get` waiting for a direct result, and every later
    /// call, asks the head instead, which fails at once.
    pub(super) fn head_lost(&self) {
        *self.routes.lock() = None;
        self.results.lock().clear();
        self.arrived.notify_all();
    }

    /// The result `id` if it arrived here and is kept.
    pub(super) fn ready(&self, id: ObjectId) -> Option<ObjectBlob> {
        match self.results.lock().get(&id) {
            Some(Slot::Ready(Ok(blob))) => Some(blob.clone()),
            _ => None,
        }
    }

    /// This process dropped a reference to each of `ids`: later reads go
    /// to the head, which holds the value as long as any reference does.
    pub(super) fn released(&self, ids: &[ObjectId]) {
        let mut results = self.results.lock();
        if results.is_empty() {
            return;
        }
        for id in ids {
            results.remove(id);
        }
    }

    /// Waits until none of `ids` is a pending direct result, then gives
    /// those that arrived here (`None`: read it from the head). Results
    /// come in about the order they were asked for, so it waits for one id
    /// at a time and each arrival costs a look at one slot, not at all.
    pub(super) fn wait_for(
        &self,
        ids: &[ObjectId],
        timeout: Option<Duration>,
    ) -> Result<Vec<Option<Result<ObjectBlob>>>> {
        let is_pending = |results: &HashMap<ObjectId, Slot>, id: &ObjectId| {
            matches!(results.get(id), Some(Slot::Pending { .. }))
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut spun = false;
        let mut results = self.results.lock();
        for id in ids {
            if !is_pending(&results, id) {
                continue;
            }
            if !spun {
                // A synchronous call's result is usually one round trip
                // away: poll that long once before sleeping.
                spun = true;
                drop(results);
                crate::spin::poll(|| (!is_pending(&self.results.lock(), id)).then_some(()));
                results = self.results.lock();
            }
            while let Some(Slot::Pending { waited }) = results.get_mut(id) {
                *waited = true;
                match deadline {
                    Some(deadline) => {
                        if self.arrived.wait_until(&mut results, deadline).timed_out()
                            && is_pending(&results, id)
                        {
                            return Err(Error::Timeout {
                                seconds: timeout.unwrap_or_default().as_secs_f64(),
                            });
                        }
                    }
                    None => self.arrived.wait(&mut results),
                }
            }
        }
        Ok(ids
            .iter()
            .map(|id| match results.get(id) {
                Some(Slot::Ready(value)) => Some(value.clone()),
                _ => None,
            })
            .collect())
    }
}

impl WorkerClient {
    /// Sends a call to `actor` on its route.
    pub(super) fn submit_actor_call(&self, spec: TaskSpec, actor: ActorId) {
        let submitter = &self.submitter;
        let mut routes = submitter.routes.lock();
        let Some(routes) = routes.as_mut() else {
            return self.send(WorkerToNode::Submit(spec));
        };
        match routes.get_mut(&actor) {
            Some(Route::ThroughHead) => self.send(WorkerToNode::Submit(spec)),
            Some(Route::Direct(link)) => {
                submitter.expect(spec.return_id);
                self.send_direct(link, spec);
            }
            Some(Route::Resolving(held)) => held.push(self.hold(spec)),
            None => {
                let held = self.hold(spec);
                routes.insert(actor, Route::Resolving(vec![held]));
                self.resolve(actor, None);
            }
        }
    }

    /// Takes back the call producing `id` if it still waits here for its
    /// actor's route, so it is never sent; its result is then read from the
    /// head, which ends it as cancelled when this process asks it to
    /// cancel it (after this, on the same stream). A call already on its
    /// way is the actor's worker's to drop, through the head.
    pub(super) fn withdraw_held_call(&self, id: ObjectId) {
        let mut routes = self.submitter.routes.lock();
        let held_calls = routes.iter_mut().flat_map(|routes| routes.values_mut());
        for route in held_calls {
            if let Route::Resolving(held) = route {
                if let Some(at) = held.iter().position(|h| h.return_id == id) {
                    held.remove(at);
                    self.submitter.ask_head([id]);
                    return;
                }
            }
        }
    }

    /// Tells the head of a call that waits here for its route.
    fn hold(&self, spec: TaskSpec) -> HeldCall {
        self.submitter.expect(spec.return_id);
        let held = HeldCall {
            call: self.direct_call(&spec),
            return_id: spec.return_id,
        };
        self.send(WorkerToNode::DirectCallSent { spec, worker: None });
        held
    }

    fn send_direct(&self, link: &Link, spec: TaskSpec) {
        link.in_flight.lock().insert(spec.task_id, spec.return_id);
        let call = self.direct_call(&spec);
        self.send(WorkerToNode::DirectCallSent {
            spec,
            worker: Some(link.worker),
        });
        // A broken stream is noticed by its reader, which hands what was
        // in flight back to the head.
        let _ = link.calls.send(call);
    }

    /// The call as the actor's worker gets it. A ref argument whose value
    /// this process holds (a small value it put, a direct call's result)
    /// travels inline, as Ray inlines small owned arguments, so the worker
    /// need not ask the head for it; the head's record keeps the ref.
    fn direct_call(&self, spec: &TaskSpec) -> DirectCall {
        let args = spec
            .args
            .iter()
            .map(|arg| match arg {
                TaskArg::Ref(id) => match self.value_held_here(*id) {
                    Some(blob) => TaskArg::Value(blob),
                    None => TaskArg::Ref(*id),
                },
                value => value.clone(),
            })
            .collect();
        DirectCall {
            task_id: spec.task_id,
            caller: self.id,
            invocation: spec.invocation.clone(),
            args,
        }
    }

    /// Asks the head where `actor` lives (not on `not_on`) and opens a
    /// stream to it, in the background; calls wait meanwhile.
    fn resolve(&self, actor: ActorId, not_on: Option<WorkerId>) {
        let client = self.this.clone();
        self.runtime.spawn(async move {
            let mut not_on = not_on;
            let link = loop {
                let Some(route) = ask_route(&client, actor, not_on).await else {
                    break None;
                };
                match connect(&client, actor, &route).await {
                    Some(link) => break Some(link),
                    // Gone since the head answered: ask again without it.
                    None => not_on = Some(route.worker),
                }
            };
            if let Some(client) = client.upgrade() {
                client.route_found(actor, link);
            }
        });
    }

    /// The calls held for `actor` go on their way: to its worker, or to
    /// the head.
    fn route_found(&self, actor: ActorId, link: Option<Link>) {
        let mut routes = self.submitter.routes.lock();
        let Some(routes) = routes.as_mut() else {
            return;
        };
        let held = match routes.remove(&actor) {
            Some(Route::Resolving(held)) => held,
            Some(other) => {
                routes.insert(actor, other);
                return;
            }
            None => Vec::new(),
        };
        match link {
            Some(link) => {
                for HeldCall { call, return_id } in held {
                    link.in_flight.lock().insert(call.task_id, return_id);
                    self.send(WorkerToNode::DirectCallRouted {
                        task_id: call.task_id,
                        worker: Some(link.worker),
                    });
                    let _ = link.calls.send(call);
                }
                routes.insert(actor, Route::Direct(link));
            }
            None => {
                self.submitter.ask_head(held.iter().map(|h| h.return_id));
                for HeldCall { call, .. } in held {
                    self.send(WorkerToNode::DirectCallRouted {
                        task_id: call.task_id,
                        worker: None,
                    });
                }
                routes.insert(actor, Route::ThroughHead);
            }
        }
    }

    /// Results came back from `worker`: the head completes their objects,
    /// and a `get` here reads them at once.
    fn direct_results(
        &self,
        worker: WorkerId,
        in_flight: &Mutex<HashMap<TaskId, ObjectId>>,
        results: Vec<DirectResult>,
    ) {
        let answered: Vec<(ObjectId, DirectResult)> = {
            let mut in_flight = in_flight.lock();
            results
                .into_iter()
                .filter_map(|result| Some((in_flight.remove(&result.task_id)?, result)))
                .collect()
        };
        if answered.is_empty() {
            return;
        }
        self.send(WorkerToNode::DirectCallsFinished {
            worker,
            results: answered.iter().map(|(_, result)| result.clone()).collect(),
        });
        for (return_id, result) in answered {
            self.submitter.fulfil(return_id, result.outcome);
        }
    }

    /// The stream to `worker` ended: what it had not answered is read from
    /// the head (which retries or fails it), and new calls wait for the
    /// actor's next route.
    fn link_broken(&self, actor: ActorId, worker: WorkerId) {
        let mut routes = self.submitter.routes.lock();
        let Some(routes) = routes.as_mut() else {
            return;
        };
        let lost: Vec<ObjectId> = match routes.get(&actor) {
            Some(Route::Direct(link)) if link.worker == worker => {
                link.in_flight.lock().drain().map(|(_, id)| id).collect()
            }
            _ => return,
        };
        routes.insert(actor, Route::Resolving(Vec::new()));
        self.submitter.ask_head(lost);
        self.resolve(actor, Some(worker));
    }
}

/// The head's answer to where `actor` lives; `None`: through the head.
async fn ask_route(
    client: &Weak<WorkerClient>,
    actor: ActorId,
    not_on: Option<WorkerId>,
) -> Option<ActorRoute> {
    let answer = client
        .upgrade()?
        .request_async(Request::ResolveActor { actor, not_on });
    match answer.await {
        Ok(Ok(Reply::ActorRoute(route))) => route,
        _ => None,
    }
}

/// The most results already received that are reported to the head in one
/// message.
const RESULTS_PER_BATCH: usize = 256;

/// Opens a call stream to the actor's worker at `route`, with a task that
/// reads its results; `None` if it cannot be reached.
async fn connect(client: &Weak<WorkerClient>, actor: ActorId, route: &ActorRoute) -> Option<Link> {
    let token = AttachToken::new(&client.upgrade()?.token).ok()?;
    let channel = head_link::endpoint(&route.address)
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut rpc = ActorCallsClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (calls, outbound) = mpsc::unbounded_channel();
    let mut inbound = rpc
        .call_stream(UnboundedReceiverStream::new(outbound))
        .await
        .ok()?
        .into_inner();
    let link = Link {
        worker: route.worker,
        calls,
        in_flight: Arc::default(),
    };
    let (worker, in_flight, client) = (link.worker, link.in_flight.clone(), client.clone());
    tokio::spawn(async move {
        while let Ok(Some(first)) = inbound.message().await {
            let (results, ended) = crate::wire::with_ready(first, &mut inbound, RESULTS_PER_BATCH);
            match client.upgrade() {
                Some(client) => client.direct_results(worker, &in_flight, results),
                None => return,
            }
            if ended.is_some() {
                break;
            }
        }
        if let Some(client) = client.upgrade() {
            client.link_broken(actor, worker);
        }
    });
    Some(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: &[u8]) -> ObjectBlob {
        ObjectBlob {
            type_name: "bytes".into(),
            contained: Vec::new(),
            payload: Payload::Inline(bytes.to_vec()),
        }
    }

    fn in_shared_memory() -> ObjectBlob {
        ObjectBlob {
            type_name: "bytes".into(),
            contained: Vec::new(),
            payload: Payload::Shared {
                path: "/oxray-test-1".into(),
                len: 1 << 20,
                node: "node".into(),
                server: "node:1".into(),
                generation: 1,
            },
        }
    }

    fn inline_bytes(result: &Option<Result<ObjectBlob>>) -> Option<Vec<u8>> {
        match result {
            Some(Ok(ObjectBlob {
                payload: Payload::Inline(bytes),
                ..
            })) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// A `get` of direct results sleeps until each arrives, woken by its
    /// arrival on another thread; what it never expected, and a value in
    /// shared memory (which the head locates), it leaves to the head.
    #[test]
    fn a_get_waits_for_each_pending_result_and_leaves_the_rest_to_the_head() {
        let submitter = Arc::new(ActorSubmitter::default());
        let (small, large, unknown) = (ObjectId(1), ObjectId(2), ObjectId(3));
        submitter.expect(small);
        submitter.expect(large);
        let arriving = {
            let submitter = submitter.clone();
            std::thread::spawn(move || {
                submitter.fulfil(large, Ok(in_shared_memory()));
                submitter.fulfil(small, Ok(value(b"42")));
            })
        };
        let got = submitter
            .wait_for(&[small, large, unknown], Some(Duration::from_secs(60)))
            .unwrap();
        arriving.join().unwrap();
        assert_eq!(inline_bytes(&got[0]), Some(b"42".to_vec()));
        assert!(
            got[1].is_none(),
            "a shared-memory result is read from the head"
        );
        assert!(got[2].is_none(), "an id never sent here is the head's");
        assert_eq!(
            inline_bytes(&submitter.ready(small).map(Ok)),
            Some(b"42".to_vec()),
            "kept for this process's later gets"
        );

        submitter.released(&[small]);
        assert!(
            submitter.ready(small).is_none(),
            "released: later reads ask the head"
        );
        submitter.fulfil(small, Ok(value(b"late")));
        assert!(
            submitter.ready(small).is_none(),
            "a result nobody holds is not kept"
        );
    }

    #[test]
    fn a_pending_result_times_out_and_a_lost_head_wakes_its_waiter() {
        let submitter = Arc::new(ActorSubmitter::default());
        let pending = ObjectId(1);
        submitter.expect(pending);
        let timed_out = submitter.wait_for(&[pending], Some(Duration::from_millis(1)));
        assert!(
            matches!(timed_out, Err(Error::Timeout { .. })),
            "{timed_out:?}"
        );

        let waiting = {
            let submitter = submitter.clone();
            std::thread::spawn(move || submitter.wait_for(&[pending], None))
        };
        // Whether the waiter sleeps already or not, losing the head ends its
        // wait: the slot is gone, so the result is asked of the head.
        submitter.head_lost();
        let got = waiting.join().unwrap().unwrap();
        assert!(got[0].is_none());
    }
}

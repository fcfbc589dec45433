//! The embedded driver's backend: the driver that hosts the head calls it
//! directly (no socket, no serialisation), blocking where a worker would wait
//! on its stream: on its own wait slot for objects (after a brief spin,
//! `spin.rs`), on the head's condition variable for the rest.

use super::object_directory::{ObjectEntry, Outstanding};
use super::object_waiters::Registration;
use super::{Node, NodeState};
use crate::error::{Error, Result};
use crate::ids::{ActorId, ObjectId};
use crate::placement::PlacementStrategy;
use crate::protocol::*;
use crate::resources::ResourceSet;
use crate::runtime::Backend;
use parking_lot::MutexGuard;
use std::time::{Duration, Instant};

impl Backend for Node {
    fn session(&self) -> &str {
        &self.config.session
    }

    fn hosts_node(&self) -> bool {
        true
    }

    fn object_server(&self) -> Option<&str> {
        Some(&self.object_server_address)
    }

    fn token(&self) -> &str {
        &self.config.token
    }

    fn next_id(&self) -> u64 {
        self.ids.next()
    }

    fn submit(&self, spec: TaskSpec) {
        // Its worker's answer is one round trip away.
        self.warm.touch();
        self.with_state(|state| state.submit(spec, self.embedded_job, None));
    }

    fn create_actor(&self, spec: ActorSpec) -> Result<ActorId> {
        self.with_state(|state| state.create_actor(spec, self.embedded_job, None))
    }

    fn put(&self, id: ObjectId, value: Result<ObjectBlob>) {
        self.with_state(|state| {
            state.objects.insert(
                id,
                ObjectEntry {
                    value: None,
                    refs: 1,
                    producer: None,
                },
            );
            state.complete(id, value);
        });
    }

    fn get(&self, ids: &[ObjectId], timeout: Option<Duration>) -> Result<Vec<Result<ObjectBlob>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut outstanding = Outstanding::new(ids);
        let mut state = self.state.lock();
        loop {
            let missing = outstanding.missing(&state)?;
            if missing == 0 {
                return Ok(ids.iter().map(|id| state.value_of(*id)).collect());
            }
            let waited = outstanding.register(&mut state, missing);
            if !self.block_on(&mut state, waited, deadline) && outstanding.missing(&state)? > 0 {
                return Err(Error::Timeout {
                    seconds: timeout.unwrap_or_default().as_secs_f64(),
                });
            }
        }
    }

    fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<bool>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut outstanding = Outstanding::new(ids);
        let mut state = self.state.lock();
        loop {
            let ready = ids.len() - outstanding.missing(&state)?;
            if ready >= num_returns {
                break;
            }
            let waited = outstanding.register(&mut state, num_returns - ready);
            if !self.block_on(&mut state, waited, deadline) {
                break;
            }
        }
        Ok(state.ready_flags(ids))
    }

    fn add_refs(&self, ids: &[ObjectId]) {
        let mut state = self.state.lock();
        for id in ids {
            state.add_ref(*id);
        }
    }

    fn release(&self, ids: &[ObjectId]) {
        let has_effects = {
            let mut state = self.state.lock();
            for id in ids {
                state.release(*id);
            }
            !state.effects.is_empty()
        };
        // Effects may include an actor ended with its last handle: its
        // resources go to what waits for them.
        if has_effects {
            self.with_state(|_| ());
        }
    }

    fn cancel(&self, id: ObjectId) -> Result<()> {
        self.with_state(|state| state.cancel(id))
    }

    fn kill_actor(&self, id: ActorId) -> Result<()> {
        self.with_state(|state| state.kill_actor(id))
    }

    fn node_id(&self) -> &str {
        &self.config.node_id
    }

    fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.with_state(|state| {
            state.kv.insert(key.to_string(), value);
            // Wakes `kv_wait`ers, which share the objects' wake-up.
            state.ready_events += 1;
        });
        Ok(())
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.state.lock().kv.get(key).cloned())
    }

    fn kv_wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        loop {
            if let Some(value) = state.kv.get(key) {
                return Ok(value.clone());
            }
            if self
                .objects_changed
                .wait_until(&mut state, deadline)
                .timed_out()
                && !state.kv.contains_key(key)
            {
                return Err(Error::Timeout {
                    seconds: timeout.as_secs_f64(),
                });
            }
        }
    }

    fn kv_delete(&self, key: &str) -> Result<()> {
        self.state.lock().kv.remove(key);
        Ok(())
    }

    fn create_placement_group(
        &self,
        id: u64,
        bundles: Vec<ResourceSet>,
        strategy: PlacementStrategy,
    ) -> Result<()> {
        self.with_state(|state| {
            state.create_placement_group(id, bundles, strategy, self.embedded_job)
        })
    }

    fn wait_placement_group(&self, id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        while !state.placement_group_ready(id)? {
            if self
                .objects_changed
                .wait_until(&mut state, deadline)
                .timed_out()
                && !state.placement_group_ready(id)?
            {
                return Err(Error::Timeout {
                    seconds: timeout.as_secs_f64(),
                });
            }
        }
        Ok(())
    }

    fn remove_placement_group(&self, id: u64) -> Result<()> {
        self.with_state(|state| state.remove_placement_group(id))
    }

    fn named_actor(&self, name: &str) -> Result<Option<(ActorId, String)>> {
        Ok(self.state.lock().named_actor(self.embedded_job, name))
    }
}

impl Node {
    /// Blocks the embedded driver's thread, the state unlocked, until the
    /// objects it registered on wake it or `deadline` passes; says whether
    /// it was woken. A task's result usually arrives within a round trip, so
    /// it spins briefly before parking.
    fn block_on(
        &self,
        state: &mut MutexGuard<'_, NodeState>,
        Registration { waiter, slot }: Registration,
        deadline: Option<Instant>,
    ) -> bool {
        let woken = MutexGuard::unlocked(state, || {
            crate::spin::poll(|| slot.is_woken().then_some(())).is_some()
                || slot.wait_until(deadline)
        });
        if !woken {
            state.object_waiters.unregister(waiter);
        }
        woken
    }
}

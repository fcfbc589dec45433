//! Ray-style functions (`ray.util.collective`): groups are named, joined from
//! inside each rank with [`init_collective_group`], and used by name.
//!
//! The process keeps its groups in a registry, so code deep inside an actor
//! can reach a group by name without threading a handle through. Each group
//! has its own lock: operations on different groups may run concurrently.
//! Rendezvous goes through the cluster's key-value store, so ranks can be any
//! processes of the cluster.

use crate::error::{CollectiveError, Result};
use crate::group::CollectiveGroup;
use crate::options::{GroupOptions, ReduceOp};
use crate::rendezvous::KvRendezvous;
use crate::transport::ByteCounters;
use oxray_core::{ActorClass, ActorHandle, ObjectRef};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

type Registry = Mutex<HashMap<String, Arc<Mutex<CollectiveGroup>>>>;

static GROUPS: LazyLock<Registry> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Joins `group_name` as `rank` of `world_size` from inside this process,
/// meeting the other ranks through the cluster's key-value store.
pub fn init_collective_group(
    world_size: usize,
    rank: usize,
    group_name: &str,
    options: GroupOptions,
) -> Result<()> {
    if GROUPS.lock().contains_key(group_name) {
        return Err(CollectiveError::GroupExists(group_name.to_string()));
    }
    let group = CollectiveGroup::join(world_size, rank, group_name, options, &KvRendezvous)?;
    match GROUPS.lock().entry(group_name.to_string()) {
        std::collections::hash_map::Entry::Occupied(_) => {
            Err(CollectiveError::GroupExists(group_name.to_string()))
        }
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(Arc::new(Mutex::new(group)));
            Ok(())
        }
    }
}

/// From the driver: checks that `actors` are distinct, then has every actor
/// join `group_name` by calling `join(actor, rank)` (an actor method that
/// calls [`init_collective_group`] with that rank), all at once, and waits
/// for them with `options.timeout`. Returns what the join calls returned.
pub fn create_collective_group<A, R>(
    actors: &[ActorHandle<A>],
    group_name: &str,
    options: &GroupOptions,
    join: impl Fn(&ActorHandle<A>, usize) -> ObjectRef<R>,
) -> Result<Vec<R>>
where
    A: ActorClass,
    R: DeserializeOwned,
{
    for (index, actor) in actors.iter().enumerate() {
        if actors[..index]
            .iter()
            .any(|earlier| earlier.id() == actor.id())
        {
            return Err(CollectiveError::DuplicateActor {
                group: group_name.to_string(),
                actor: format!("{:?}", actor.id()),
            });
        }
    }
    let joins: Vec<ObjectRef<R>> = actors
        .iter()
        .enumerate()
        .map(|(rank, actor)| join(actor, rank))
        .collect();
    Ok(oxray_core::get_all_timeout(&joins, Some(options.timeout))?)
}

/// Leaves `group_name`, closing its connections.
pub fn destroy_collective_group(group_name: &str) -> Result<()> {
    GROUPS
        .lock()
        .remove(group_name)
        .map(drop)
        .ok_or_else(|| CollectiveError::UnknownGroup(group_name.to_string()))
}

pub fn is_group_initialized(group_name: &str) -> bool {
    GROUPS.lock().contains_key(group_name)
}

/// Runs `operation` on the named group (for anything the free functions do
/// not cover, e.g. a [`GradientBucketer`](crate::GradientBucketer)).
pub fn with_group<T>(
    group_name: &str,
    operation: impl FnOnce(&mut CollectiveGroup) -> T,
) -> Result<T> {
    let group = GROUPS
        .lock()
        .get(group_name)
        .cloned()
        .ok_or_else(|| CollectiveError::UnknownGroup(group_name.to_string()))?;
    let mut group = group.lock();
    Ok(operation(&mut group))
}

pub fn allreduce(buffer: &mut [f32], group_name: &str, op: ReduceOp) -> Result<()> {
    with_group(group_name, |group| group.allreduce(buffer, op))?
}

pub fn broadcast(buffer: &mut [f32], root: usize, group_name: &str) -> Result<()> {
    with_group(group_name, |group| group.broadcast(buffer, root))?
}

pub fn allgather(input: &[f32], output: &mut [f32], group_name: &str) -> Result<()> {
    with_group(group_name, |group| group.allgather(input, output))?
}

pub fn reducescatter(
    input: &[f32],
    output: &mut [f32],
    group_name: &str,
    op: ReduceOp,
) -> Result<()> {
    with_group(group_name, |group| group.reducescatter(input, output, op))?
}

pub fn barrier(group_name: &str) -> Result<()> {
    with_group(group_name, CollectiveGroup::barrier)?
}

pub fn get_rank(group_name: &str) -> Result<usize> {
    with_group(group_name, |group| group.rank())
}

pub fn get_world_size(group_name: &str) -> Result<usize> {
    with_group(group_name, |group| group.world_size())
}

pub fn byte_counters(group_name: &str) -> Result<ByteCounters> {
    with_group(group_name, |group| group.counters())
}

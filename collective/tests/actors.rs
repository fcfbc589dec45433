//! Collective groups of real oxray actors: each rank is an actor's worker
//! process, ranks meet through the cluster's key-value store and exchange data
//! peer-to-peer.

use oxray_collective::{self as collective, CollectiveError, GroupOptions, ReduceOp};
use oxray_core::{actor, ActorHandle, Error, InitOptions};
use std::time::Duration;

/// Starts this test binary's cluster once; later calls reuse it.
fn start() {
    static START: std::sync::Once = std::sync::Once::new();
    START.call_once(|| {
        oxray_core::init(InitOptions::default().num_cpus(2.0)).expect("embedded cluster starts")
    });
}

fn options() -> GroupOptions {
    GroupOptions::default().timeout(Duration::from_secs(60))
}

/// A learner-like actor that joins a group and all-reduces what it is given.
pub struct Rank {
    group: Option<String>,
}

#[actor]
impl Rank {
    pub fn new() -> Self {
        Rank { group: None }
    }

    /// Joins `group` as `rank`; returns this worker's process id.
    pub fn join(&mut self, world_size: usize, rank: usize, group: String) -> Result<u32, String> {
        collective::init_collective_group(world_size, rank, &group, options())
            .map_err(|error| error.to_string())?;
        self.group = Some(group);
        Ok(std::process::id())
    }

    /// All-reduces `values`; also returns the (inside, across) node bytes sent.
    pub fn allreduce(&mut self, mut values: Vec<f32>) -> Result<(Vec<f32>, u64, u64), String> {
        let group = self.group.clone().ok_or("not in a group")?;
        collective::allreduce(&mut values, &group, ReduceOp::Sum)
            .map_err(|error| error.to_string())?;
        let counters = collective::byte_counters(&group).map_err(|error| error.to_string())?;
        Ok((values, counters.intra_node, counters.inter_node))
    }

    /// Leaves the group; reports whether the process still knows it.
    pub fn leave(&mut self) -> Result<bool, String> {
        let group = self.group.take().ok_or("not in a group")?;
        collective::destroy_collective_group(&group).map_err(|error| error.to_string())?;
        Ok(collective::is_group_initialized(&group))
    }
}

fn form_group(actors: &[ActorHandle<Rank>], name: &str) -> Vec<u32> {
    let world = actors.len();
    collective::create_collective_group(actors, name, &options(), |actor, rank| {
        actor.join(world, rank, name.to_string())
    })
    .expect("every actor joins")
}

#[test]
fn two_actor_processes_allreduce_through_the_kv_rendezvous() {
    start();
    let actors: Vec<ActorHandle<Rank>> = (0..2)
        .map(|_| Rank::options().remote().expect("actor starts"))
        .collect();
    let pids = form_group(&actors, "actors-allreduce");
    assert_ne!(pids[0], pids[1], "ranks are separate processes");
    assert!(
        !pids.contains(&std::process::id()),
        "no rank runs in the driver"
    );

    let len = 100_003;
    let inputs: Vec<Vec<f32>> = (0..2)
        .map(|rank| (0..len).map(|i| (i % 97) as f32 + rank as f32).collect())
        .collect();
    let calls: Vec<_> = actors
        .iter()
        .zip(&inputs)
        .map(|(actor, input)| actor.allreduce(input.clone()))
        .collect();
    let results = oxray_core::get_all(&calls).expect("both ranks finish");
    for (values, intra_node, inter_node) in results {
        for (index, value) in values.iter().enumerate() {
            assert_eq!(*value, inputs[0][index] + inputs[1][index]);
        }
        // Both workers run on this node: all traffic stays inside it.
        assert!(
            intra_node >= (len * 4 / 2) as u64,
            "sent {intra_node} bytes"
        );
        assert_eq!(inter_node, 0);
    }
    let leaves: Vec<_> = actors.iter().map(|actor| actor.leave()).collect();
    assert_eq!(
        oxray_core::get_all(&leaves).expect("both ranks leave"),
        vec![false, false]
    );
}

#[test]
fn a_group_with_the_same_actor_twice_is_refused() {
    start();
    let actor = Rank::options().remote().expect("actor starts");
    let twice = [actor.clone(), actor];
    let outcome =
        collective::create_collective_group(&twice, "duplicated", &options(), |actor, rank| {
            actor.join(2, rank, "duplicated".to_string())
        });
    assert!(
        matches!(outcome, Err(CollectiveError::DuplicateActor { .. })),
        "{outcome:?}"
    );
}

#[test]
fn killing_a_rank_fails_the_survivors_collective() {
    start();
    let actors: Vec<ActorHandle<Rank>> = (0..3)
        .map(|_| Rank::options().remote().expect("actor starts"))
        .collect();
    form_group(&actors, "actors-fragile");
    let survivors: Vec<_> = actors[..2]
        .iter()
        .map(|actor| actor.allreduce(vec![1.0; 1 << 20]))
        .collect();
    oxray_core::kill(&actors[2]).expect("kill rank 2");
    for call in survivors {
        match call.get() {
            Err(Error::TaskFailed { message, .. }) => {
                assert!(
                    message.contains("disconnected during allreduce"),
                    "{message}"
                )
            }
            other => panic!("expected a failed all-reduce, got {other:?}"),
        }
    }
}

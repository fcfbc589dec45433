//! Placement groups: bundles of resources reserved together, all or none,
//! across the cluster's nodes (Ray's `placement_group`).
//!
//! Reserving a group picks a node for every bundle on copies of the node pools
//! and commits only a complete placement, so a group never holds half its
//! bundles. Each reserved bundle becomes a pool of its own; tasks and actors
//! scheduled with [`PlacementGroup::bundle`] draw from it and nothing else
//! does. A group that could not be placed even on an idle cluster is an error
//! at once; one that only has to wait stays pending (and `oxray status` shows
//! it) until resources free up.

use crate::error::{Error, Result};
use crate::resources::{ResourcePool, ResourceSet, SchedulingStrategy};
use crate::runtime;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a group's bundles spread over nodes, as Ray names the strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementStrategy {
    /// As few nodes as possible.
    Pack,
    /// As many nodes as possible.
    Spread,
    /// All bundles on one node, or wait.
    StrictPack,
    /// Every bundle on a different node, or wait.
    StrictSpread,
}

/// A reserved (or pending) placement group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementGroup {
    id: u64,
    bundle_count: usize,
}

impl PlacementGroup {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn bundle_count(&self) -> usize {
        self.bundle_count
    }

    /// Blocks until every bundle is reserved; [`Error::Timeout`] after
    /// `timeout`.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        runtime::current()?.wait_placement_group(self.id, timeout)
    }

    /// Schedules a task or actor into bundle `index`.
    pub fn bundle(&self, index: usize) -> SchedulingStrategy {
        SchedulingStrategy::PlacementGroup {
            group: self.id,
            bundle: Some(index),
        }
    }

    /// Schedules a task or actor into whichever bundle has room.
    pub fn any_bundle(&self) -> SchedulingStrategy {
        SchedulingStrategy::PlacementGroup {
            group: self.id,
            bundle: None,
        }
    }
}

/// Reserves `bundles` (each a list of `(resource, amount)`) with `strategy`.
/// Returns at once; [`PlacementGroup::wait`] blocks until it is placed.
pub fn placement_group(
    bundles: &[&[(&str, f64)]],
    strategy: PlacementStrategy,
) -> Result<PlacementGroup> {
    let bundles: Vec<ResourceSet> = bundles
        .iter()
        .map(|bundle| {
            let mut set = ResourceSet::default();
            for (name, amount) in *bundle {
                set.set(name, *amount);
            }
            set
        })
        .collect();
    if bundles.is_empty() || bundles.iter().any(|b| b.0.is_empty()) {
        return Err(Error::Runtime(
            "a placement group needs at least one bundle, and no empty bundle".into(),
        ));
    }
    let backend = runtime::current()?;
    let id = backend.next_id();
    let bundle_count = bundles.len();
    backend.create_placement_group(id, bundles, strategy)?;
    Ok(PlacementGroup { id, bundle_count })
}

/// A group's bundles as `ray status` writes them: each run of equal bundles
/// once with its count (`{CPU: 1} * 2, {GPU: 1} * 1`), so a group of many
/// like bundles stays one short line in warnings and status.
pub fn describe_bundles<'a>(bundles: impl IntoIterator<Item = &'a ResourceSet>) -> String {
    let mut runs: Vec<(&ResourceSet, usize)> = Vec::new();
    for bundle in bundles {
        match runs.last_mut() {
            Some((last, count)) if *last == bundle => *count += 1,
            _ => runs.push((bundle, 1)),
        }
    }
    let runs: Vec<String> = runs
        .into_iter()
        .map(|(bundle, count)| format!("{bundle} * {count}"))
        .collect();
    runs.join(", ")
}

/// Frees a group's bundles; actors placed in it are killed, as in Ray.
pub fn remove_placement_group(group: &PlacementGroup) -> Result<()> {
    runtime::current()?.remove_placement_group(group.id)
}

/// Chooses a node (an index into `pools`) for every bundle, or `None` if the
/// pools cannot hold the group under `strategy` right now.
pub(crate) fn place(
    pools: &[ResourcePool],
    bundles: &[ResourceSet],
    strategy: PlacementStrategy,
) -> Option<Vec<usize>> {
    match strategy {
        PlacementStrategy::StrictPack => (0..pools.len()).find_map(|node| {
            let mut pool = pools[node].clone();
            bundles
                .iter()
                .all(|b| pool.try_acquire(b).is_some())
                .then(|| vec![node; bundles.len()])
        }),
        PlacementStrategy::Pack => place(pools, bundles, PlacementStrategy::StrictPack)
            .or_else(|| greedy(pools, bundles, strategy)),
        PlacementStrategy::Spread | PlacementStrategy::StrictSpread => {
            greedy(pools, bundles, strategy)
        }
    }
}

/// Places bundles one by one: onto the node already holding most of the group
/// (pack), the fewest (spread), or only onto unused nodes (strict spread).
fn greedy(
    pools: &[ResourcePool],
    bundles: &[ResourceSet],
    strategy: PlacementStrategy,
) -> Option<Vec<usize>> {
    let mut trial: Vec<ResourcePool> = pools.to_vec();
    let mut used = vec![0usize; pools.len()];
    let mut placement = Vec::with_capacity(bundles.len());
    for bundle in bundles {
        let fits: Vec<usize> = (0..trial.len())
            .filter(|n| trial[*n].clone().try_acquire(bundle).is_some())
            .collect();
        let choice = match strategy {
            PlacementStrategy::Pack | PlacementStrategy::StrictPack => fits
                .iter()
                .copied()
                .max_by_key(|n| (used[*n], std::cmp::Reverse(*n))),
            PlacementStrategy::Spread => fits.iter().copied().min_by_key(|n| (used[*n], *n)),
            PlacementStrategy::StrictSpread => fits.iter().copied().find(|n| used[*n] == 0),
        }?;
        trial[choice].try_acquire(bundle)?;
        used[choice] += 1;
        placement.push(choice);
    }
    Some(placement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CPU, GPU};

    fn pool(cpus: f64, gpus: f64) -> ResourcePool {
        let mut set = ResourceSet::default();
        set.set(CPU, cpus);
        set.set(GPU, gpus);
        ResourcePool::new(set)
    }

    fn bundle(cpus: f64, gpus: f64) -> ResourceSet {
        let mut set = ResourceSet::default();
        set.set(CPU, cpus);
        set.set(GPU, gpus);
        set
    }

    #[test]
    fn bundles_are_described_as_runs_of_equal_bundles() {
        let cpu = bundle(1.0, 0.0);
        let gpu = bundle(1.0, 1.0);
        let cases: [(&[&ResourceSet], &str); 4] = [
            (&[], ""),
            (&[&cpu], "{CPU: 1} * 1"),
            (&[&cpu, &cpu, &cpu], "{CPU: 1} * 3"),
            (
                &[&cpu, &gpu, &gpu, &cpu],
                "{CPU: 1} * 1, {CPU: 1, GPU: 1} * 2, {CPU: 1} * 1",
            ),
        ];
        for (bundles, described) in cases {
            assert_eq!(describe_bundles(bundles.iter().copied()), described);
        }
    }

    #[test]
    fn strategies_place_as_named() {
        let nodes = [pool(4.0, 0.0), pool(4.0, 0.0), pool(4.0, 0.0)];
        let three = [bundle(1.0, 0.0), bundle(1.0, 0.0), bundle(1.0, 0.0)];
        assert_eq!(
            place(&nodes, &three, PlacementStrategy::StrictPack),
            Some(vec![0, 0, 0])
        );
        assert_eq!(
            place(&nodes, &three, PlacementStrategy::Pack),
            Some(vec![0, 0, 0])
        );
        assert_eq!(
            place(&nodes, &three, PlacementStrategy::StrictSpread),
            Some(vec![0, 1, 2])
        );
        assert_eq!(
            place(&nodes, &three, PlacementStrategy::Spread),
            Some(vec![0, 1, 2])
        );
        let four = [
            bundle(1.0, 0.0),
            bundle(1.0, 0.0),
            bundle(1.0, 0.0),
            bundle(1.0, 0.0),
        ];
        assert_eq!(place(&nodes, &four, PlacementStrategy::StrictSpread), None);
        assert_eq!(
            place(&nodes, &four, PlacementStrategy::Spread),
            Some(vec![0, 1, 2, 0])
        );
    }

    #[test]
    fn pack_overflows_to_other_nodes_but_strict_pack_waits() {
        let nodes = [pool(2.0, 0.0), pool(2.0, 0.0)];
        let three = [bundle(1.0, 0.0), bundle(1.0, 0.0), bundle(1.0, 0.0)];
        assert_eq!(place(&nodes, &three, PlacementStrategy::StrictPack), None);
        assert_eq!(
            place(&nodes, &three, PlacementStrategy::Pack),
            Some(vec![0, 0, 1])
        );
    }

    #[test]
    fn gpu_bundles_need_whole_free_gpus() {
        let nodes = [pool(8.0, 1.0), pool(8.0, 2.0)];
        let learners = [bundle(1.0, 1.0), bundle(1.0, 1.0)];
        assert_eq!(
            place(&nodes, &learners, PlacementStrategy::StrictPack),
            Some(vec![1, 1])
        );
    }
}

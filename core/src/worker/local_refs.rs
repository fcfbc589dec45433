//! How many references to each object this process holds (Ray's core
//! worker's reference counter, local side), so that copying and dropping
//! `ObjectRef`s costs the head nothing until the last one here goes.
//!
//! Without it every clone sent `AddRefs` and every drop `Release`: the loop
//! `pending = wait(&pending, 1)?.1` sent two messages per pending object per
//! turn. Here the head holds one reference for all of this process's
//! references to an object, taken when the object was created here (a
//! submission or a put) or when the first reference arrived (a clone of one
//! not counted here, or one deserialized from a value), and given back when
//! the count falls to zero.
//!
//! A ref argument hands its handle's reference to the task (the head
//! releases it when the task is final): with the last handle here the
//! head's reference passes to the task as it is; while others remain, the
//! task is given a reference of its own. References inside an encoded
//! value are the value's, not this process's, and are sent as they are.
//!
//! A reference this process did not count (one adopted before it knew the
//! id) still balances: a release that finds no count is passed on as is,
//! and one that finds a count takes it down, so every reference the head
//! counted is given back exactly once, and never before the last one here
//! is dropped.

use crate::ids::ObjectId;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

#[derive(Default)]
pub(super) struct LocalRefs {
    counts: Mutex<FxHashMap<ObjectId, u64>>,
}

impl LocalRefs {
    /// `id` was created here with one reference, which the head counted
    /// when it learned of the object.
    pub(super) fn created(&self, id: ObjectId) {
        self.counts.lock().insert(id, 1);
    }

    /// One more reference to each of `ids`; gives those the head must be
    /// told of (the first here).
    pub(super) fn added(&self, ids: &[ObjectId]) -> Vec<ObjectId> {
        let mut counts = self.counts.lock();
        ids.iter()
            .filter(|id| {
                let count = counts.entry(**id).or_insert(0);
                *count += 1;
                *count == 1
            })
            .copied()
            .collect()
    }

    /// One handle fewer to each of `ids`, its reference now a task's: gives
    /// those whose last handle here it was (the head's reference passes to
    /// the task; so does that of a handle never counted here) and those
    /// still held here (the task needs a reference of its own).
    pub(super) fn handed_over(&self, ids: &[ObjectId]) -> (Vec<ObjectId>, Vec<ObjectId>) {
        let mut counts = self.counts.lock();
        ids.iter().partition(|id| drop_one(&mut counts, id))
    }

    /// One reference fewer to each of `ids`; gives those the head must be
    /// told of (the last here, or one never counted here).
    pub(super) fn released(&self, ids: &[ObjectId]) -> Vec<ObjectId> {
        let mut counts = self.counts.lock();
        ids.iter()
            .filter(|id| drop_one(&mut counts, id))
            .copied()
            .collect()
    }
}

/// Takes one handle to `id` off its count; `true` if it was the last one
/// counted here or was never counted here.
fn drop_one(counts: &mut FxHashMap<ObjectId, u64>, id: &ObjectId) -> bool {
    match counts.get_mut(id) {
        Some(count) if *count > 1 => {
            *count -= 1;
            false
        }
        Some(_) => {
            counts.remove(id);
            true
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_and_last_reference_here_reach_the_head() {
        let refs = LocalRefs::default();
        let (a, b) = (ObjectId(1), ObjectId(2));
        refs.created(a);
        assert_eq!(refs.added(&[a, b]), [b], "a was counted at creation");
        assert!(refs.added(&[a, b]).is_empty());
        assert!(refs.released(&[a, b]).is_empty());
        assert_eq!(refs.released(&[b]), [b], "b's last reference");
        assert_eq!(refs.released(&[a]), [], "a still has one");
        assert_eq!(refs.released(&[a]), [a]);
    }

    /// Every order of clones, drops, uncounted adoptions and hand-overs to
    /// tasks gives the head back exactly what it counted: its count never
    /// falls below what the tasks hold, and this process's share of it
    /// reaches zero exactly with the last handle here.
    #[test]
    fn the_head_count_balances_and_never_reaches_zero_early() {
        let id = ObjectId(7);
        #[derive(Clone, Copy, Debug)]
        enum Step {
            Clone,
            Uncounted,
            Drop,
            HandOver,
            TaskDone,
        }
        const STEPS: [Step; 5] = [
            Step::Clone,
            Step::Uncounted,
            Step::Drop,
            Step::HandOver,
            Step::TaskDone,
        ];
        const LENGTH: u32 = 6;
        for mut code in 0..(STEPS.len() as u32).pow(LENGTH) {
            let sequence: Vec<Step> = (0..LENGTH)
                .map(|_| {
                    let step = STEPS[(code % STEPS.len() as u32) as usize];
                    code /= STEPS.len() as u32;
                    step
                })
                .collect();
            let refs = LocalRefs::default();
            refs.created(id);
            // Handles alive here, references tasks hold, the head's count.
            let (mut live, mut tasks, mut head) = (1i64, 0i64, 1i64);
            let check = |live: i64, tasks: i64, head: i64| {
                assert!(head >= tasks, "{sequence:?}");
                assert_eq!(head - tasks == 0, live == 0, "{sequence:?}");
            };
            for step in sequence.iter().copied() {
                match step {
                    Step::Clone if live > 0 => {
                        live += 1;
                        head += refs.added(&[id]).len() as i64;
                    }
                    Step::Uncounted => {
                        // A handle whose reference the head counted elsewhere
                        // (adopted before this process counted the id).
                        live += 1;
                        head += 1;
                    }
                    Step::Drop if live > 0 => {
                        live -= 1;
                        head -= refs.released(&[id]).len() as i64;
                    }
                    Step::HandOver if live > 0 => {
                        live -= 1;
                        tasks += 1;
                        head += refs.handed_over(&[id]).1.len() as i64;
                    }
                    Step::TaskDone if tasks > 0 => {
                        tasks -= 1;
                        head -= 1;
                    }
                    _ => {}
                }
                check(live, tasks, head);
            }
            while live > 0 {
                live -= 1;
                head -= refs.released(&[id]).len() as i64;
                check(live, tasks, head);
            }
            assert_eq!(head, tasks, "{sequence:?}");
        }
    }
}

//! Segment trees for prioritized replay (Schaul et al. 2016): a sum tree
//! draws an index with probability proportional to its priority in
//! O(log N), and a min tree gives the smallest priority for normalising the
//! importance weights. Leaves live in the second half of one array, each
//! inner node combines its two children, as in RLlib's and OpenAI
//! baselines' trees.

/// A complete binary tree over `capacity` leaves (rounded up to a power of
/// two), each inner node `combine` of its children.
#[derive(Clone, Debug)]
pub struct SegmentTree {
    nodes: Vec<f64>,
    capacity: usize,
    combine: fn(f64, f64) -> f64,
    neutral: f64,
}

impl SegmentTree {
    fn new(capacity: usize, combine: fn(f64, f64) -> f64, neutral: f64) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        SegmentTree {
            nodes: vec![neutral; 2 * capacity],
            capacity,
            combine,
            neutral,
        }
    }

    /// Leaves sum to the root.
    pub fn sum(capacity: usize) -> Self {
        SegmentTree::new(capacity, |a, b| a + b, 0.0)
    }

    /// The root is the smallest leaf.
    pub fn min(capacity: usize) -> Self {
        SegmentTree::new(capacity, f64::min, f64::INFINITY)
    }

    pub fn set(&mut self, index: usize, value: f64) {
        let mut node = index + self.capacity;
        self.nodes[node] = value;
        while node > 1 {
            node /= 2;
            self.nodes[node] = (self.combine)(self.nodes[2 * node], self.nodes[2 * node + 1]);
        }
    }

    pub fn get(&self, index: usize) -> f64 {
        self.nodes[index + self.capacity]
    }

    /// The combination of every leaf.
    pub fn root(&self) -> f64 {
        self.nodes.get(1).copied().unwrap_or(self.neutral)
    }

    /// For a sum tree: the first leaf `i` whose prefix sum (leaves `0..=i`)
    /// exceeds `mass`, for `0 ≤ mass < root()`.
    pub fn find_prefix_sum(&self, mut mass: f64) -> usize {
        let mut node = 1;
        while node < self.capacity {
            let left = 2 * node;
            if mass < self.nodes[left] {
                node = left;
            } else {
                mass -= self.nodes[left];
                node = left + 1;
            }
        }
        node - self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_tree_finds_the_leaf_holding_a_prefix_mass() {
        let mut tree = SegmentTree::sum(5);
        for (i, p) in [1.0, 0.0, 3.0, 2.0, 4.0].into_iter().enumerate() {
            tree.set(i, p);
        }
        assert_eq!(tree.root(), 10.0);
        // Prefix sums: [1, 1, 4, 6, 10].
        assert_eq!(tree.find_prefix_sum(0.0), 0);
        assert_eq!(tree.find_prefix_sum(0.99), 0);
        assert_eq!(tree.find_prefix_sum(1.0), 2);
        assert_eq!(tree.find_prefix_sum(3.99), 2);
        assert_eq!(tree.find_prefix_sum(4.0), 3);
        assert_eq!(tree.find_prefix_sum(9.99), 4);
        tree.set(2, 0.5);
        assert_eq!(tree.root(), 7.5);
        assert_eq!(tree.find_prefix_sum(1.2), 2);
    }

    #[test]
    fn min_tree_tracks_the_smallest_leaf() {
        let mut tree = SegmentTree::min(3);
        assert_eq!(tree.root(), f64::INFINITY);
        tree.set(0, 3.0);
        tree.set(2, 1.5);
        assert_eq!(tree.root(), 1.5);
        tree.set(2, 4.0);
        assert_eq!(tree.root(), 3.0);
    }
}

//! Which node each rank lives on, and the rank orders derived from it.
//!
//! The layout decides two things: which bytes count as crossing a node
//! boundary, and the order in which the topology-aware ring and the
//! hierarchical algorithm visit ranks. Nodes are numbered by first appearance
//! so every rank derives the same orders from the same labels.

/// Node membership of every rank of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    node_of_rank: Vec<usize>,
    node_labels: Vec<String>,
}

impl Layout {
    /// Builds the layout from one node label per rank.
    pub fn from_labels<S: AsRef<str>>(labels: &[S]) -> Self {
        let mut node_labels: Vec<String> = Vec::new();
        let node_of_rank = labels
            .iter()
            .map(|label| {
                let label = label.as_ref();
                match node_labels.iter().position(|known| known == label) {
                    Some(node) => node,
                    None => {
                        node_labels.push(label.to_string());
                        node_labels.len() - 1
                    }
                }
            })
            .collect();
        Layout {
            node_of_rank,
            node_labels,
        }
    }

    pub fn world_size(&self) -> usize {
        self.node_of_rank.len()
    }

    pub fn num_nodes(&self) -> usize {
        self.node_labels.len()
    }

    /// The node number (by first appearance) of `rank`.
    pub fn node_of(&self, rank: usize) -> usize {
        self.node_of_rank[rank]
    }

    pub fn node_label(&self, node: usize) -> &str {
        &self.node_labels[node]
    }

    pub fn same_node(&self, a: usize, b: usize) -> bool {
        self.node_of_rank[a] == self.node_of_rank[b]
    }

    /// The ranks on `node`, in rank order; the first is the node's leader.
    pub fn node_members(&self, node: usize) -> Vec<usize> {
        (0..self.world_size())
            .filter(|&rank| self.node_of_rank[rank] == node)
            .collect()
    }

    /// The first rank of every node, in node order.
    pub fn leaders(&self) -> Vec<usize> {
        (0..self.num_nodes())
            .map(|node| self.node_members(node)[0])
            .collect()
    }

    /// All ranks grouped by node, so a ring over this order leaves each node
    /// exactly once.
    pub fn topology_order(&self) -> Vec<usize> {
        (0..self.num_nodes())
            .flat_map(|node| self.node_members(node))
            .collect()
    }

    /// Whether the hierarchical algorithm has anything to gain: several nodes,
    /// and at least one of them with more than one rank.
    pub fn benefits_from_hierarchy(&self) -> bool {
        self.num_nodes() > 1 && self.num_nodes() < self.world_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_labels_group_by_first_appearance() {
        let layout = Layout::from_labels(&["b", "a", "b", "a"]);
        assert_eq!(layout.num_nodes(), 2);
        assert_eq!(layout.node_label(0), "b");
        assert_eq!(layout.topology_order(), vec![0, 2, 1, 3]);
        assert_eq!(layout.leaders(), vec![0, 1]);
        assert!(layout.benefits_from_hierarchy());
        assert!(!Layout::from_labels(&["a", "b"]).benefits_from_hierarchy());
        assert!(!Layout::from_labels(&["a", "a"]).benefits_from_hierarchy());
    }
}

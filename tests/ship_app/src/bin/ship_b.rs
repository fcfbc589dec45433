//! Test program B: a different function, so A's workers cannot run it.

use oxray_core::{self as oxray, remote, SchedulingStrategy};

#[remote]
fn cube_on_node(x: u64) -> (String, u64) {
    (oxray::node_id().expect("node id"), x * x * x)
}

fn main() {
    ship_app::run(|node, x| {
        cube_on_node::options()
            .scheduling_strategy(SchedulingStrategy::NodeAffinity {
                node_id: node.to_string(),
                soft: false,
            })
            .remote(x)
    });
}

//! tch tensors through `oxray-collective`.
//!
//! The collective layer moves host `f32` slices, so a tensor is staged to the
//! host only for the wire and the result copied back into it: the tensor keeps
//! its device (a GPU Learner's gradient stays on its GPU between steps).

use oxray_collective::ReduceOp;
use tch::{Kind, Tensor};

use crate::Error;

/// All-reduces the f32 `tensor` in place over the named collective group
/// (which this process joined with `oxray_collective::init_collective_group`).
pub fn allreduce_tensor(tensor: &mut Tensor, group_name: &str, op: ReduceOp) -> Result<(), Error> {
    if tensor.kind() != Kind::Float {
        return Err(Error::Incompatible(format!(
            "all-reduce needs an f32 tensor, not {:?}",
            tensor.kind()
        )));
    }
    let mut host = crate::to_host(tensor);
    oxray_collective::allreduce(&mut host, group_name, op)?;
    let reduced = Tensor::from_slice(&host)
        .view(tensor.size().as_slice())
        .to_device(tensor.device());
    tch::no_grad(|| tensor.copy_(&reduced));
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_wire_in_place_and_rejects_what_it_cannot_reduce() {
        oxray_core::init(oxray_core::InitOptions::default().num_cpus(1.0)).unwrap();
        oxray_collective::init_collective_group(1, 0, "tensor-test", Default::default()).unwrap();
        let mut tensor = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        allreduce_tensor(&mut tensor, "tensor-test", ReduceOp::Sum).unwrap();
        assert_eq!(tensor.size(), [2, 2]);
        assert_eq!(crate::to_host(&tensor), [1.0, 2.0, 3.0, 4.0]);

        let mut doubles = Tensor::from_slice(&[1.0f64]);
        let error = allreduce_tensor(&mut doubles, "tensor-test", ReduceOp::Sum).unwrap_err();
        assert!(matches!(error, Error::Incompatible(_)), "{error}");
        let error = allreduce_tensor(&mut tensor, "no-such-group", ReduceOp::Sum).unwrap_err();
        assert!(matches!(error, Error::Collective(_)), "{error}");
        oxray_core::shutdown();
    }
}

//! Policy export: a checkpoint's policy as a TorchScript module that plain
//! PyTorch (or libtorch) loads without oxray: actor-critics (PPO, APPO,
//! IMPALA), Q-networks (DQN: dueling, C51 and NoisyNets heads included),
//! each over its MLP or its CNN for images, and SAC's squashed-Gaussian or
//! categorical policy with its twin Q-functions.
//!
//! tch can load TorchScript but only trace new modules, and a traced module
//! has a `forward` and nothing else; the exported module also needs
//! `act(obs, deterministic)` with its branch, so it is scripted from Python:
//! the weights go out as an `.npz` under PyTorch-style names (`pi.0.weight`)
//! with a JSON description of the network, and `export_torchscript.py`
//! (run with the venv's Python, which has torch) rebuilds the same network,
//! loads them strictly and saves `torch.jit.script` of it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use oxray_rl::checkpoint;
use oxray_rl::env_runner::module_spec;
use oxray_rl::rl_module::{
    ActionSpace, ActorCritic, EncoderSpec, ModuleKind, QNetwork, RLModule, SoftActorCritic,
    ValueSupport,
};
use oxray_rl::ObsDType;
use serde_json::json;

use crate::algorithm::TrainError;
use crate::config::ExperimentConfig;

#[derive(Debug, thiserror::Error)]
#[error("cannot export {} to {}: {reason}", checkpoint.display(), out.display())]
pub struct ExportError {
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    pub reason: String,
}

/// Writes the checkpoint's policy to `out` as TorchScript; returns the
/// module's parameter names.
pub fn export_torchscript(checkpoint_path: &Path, out: &Path) -> Result<Vec<String>, TrainError> {
    let fail = |reason: String| ExportError {
        checkpoint: checkpoint_path.to_path_buf(),
        out: out.to_path_buf(),
        reason,
    };
    // The module is written next to `out` and renamed over it once whole,
    // so a failed export leaves an earlier file there as it was.
    if out.is_dir() {
        return Err(fail("the output is a directory; name the module's file".into()).into());
    }
    let directory = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        return Err(fail(format!("directory {} does not exist", directory.display())).into());
    }
    let staged = tempfile::Builder::new()
        .prefix(".oxray-export-")
        .suffix(".pt")
        // As any new file: the umask decides (a temporary file is 0600).
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(directory)
        .map_err(|e| fail(format!("cannot write in {}: {e}", directory.display())))?;
    let saved = checkpoint::load_policy(checkpoint_path)?;
    let config = ExperimentConfig::of_checkpoint(&saved)?;
    let kind = config.training.training().module_kind();
    let spec = module_spec(&config.env, &config.model, kind.clone())?;
    let encoder = spec.encoder().map_err(|error| oxray_rl::Error::Model {
        env: config.env.id.clone(),
        error,
    })?;
    let action = match &spec.action_space {
        ActionSpace::Discrete { n } => json!({ "discrete": n }),
        ActionSpace::Box { low, high } => json!({ "box": { "low": low, "high": high } }),
    };
    // What every kind's network is built from, then what its kind adds.
    let mut description = json!({
        "obs_dim": spec.obs_dim(),
        "features": encoder.output_dim(),
        "hiddens": spec.model.fcnet_hiddens,
        "activation": spec.model.fcnet_activation,
        "cnn": cnn_description(&encoder),
    });
    let (own_fields, mut model): (_, Box<dyn RLModule>) = match &kind {
        ModuleKind::ActorCritic => (
            json!({
                "kind": "actor_critic",
                "vf_share_layers": spec.model.vf_share_layers,
                "action": action,
            }),
            Box::new(ActorCritic::new(&spec, tch::Device::Cpu)),
        ),
        ModuleKind::QNetwork {
            dueling,
            epsilon,
            distributional,
            noisy_sigma0,
        } => {
            let ActionSpace::Discrete { n } = spec.action_space else {
                return Err(fail("a Q-network needs a Discrete action space".into()).into());
            };
            let support = distributional.clone().unwrap_or(ValueSupport {
                num_atoms: 1,
                v_min: 0.0,
                v_max: 0.0,
            });
            let fields = json!({
                "kind": "q_network",
                "num_actions": n,
                "dueling": dueling,
                "num_atoms": support.num_atoms,
                "v_min": support.v_min,
                "v_max": support.v_max,
                // What `act(obs, false)` explores with: the schedule's last ε,
                // or NoisyNets' noise.
                "epsilon": epsilon.value_at(u64::MAX),
                "noisy": noisy_sigma0.is_some(),
            });
            (fields, Box::new(QNetwork::new(&spec, tch::Device::Cpu)))
        }
        ModuleKind::SoftActorCritic { value_function, .. } => (
            json!({
                "kind": "soft_actor_critic",
                "action": action,
                "value_function": value_function,
            }),
            Box::new(SoftActorCritic::new(&spec, tch::Device::Cpu)),
        ),
    };
    let serde_json::Value::Object(own_fields) = own_fields else {
        unreachable!("each kind's fields are built as a JSON object")
    };
    description
        .as_object_mut()
        .expect("built as a JSON object")
        .extend(own_fields);
    model
        .set_weights(&saved.learner.weights)
        .map_err(oxray_rl::Error::from)?;
    let scratch = tempfile::tempdir().map_err(|e| fail(format!("no temporary directory: {e}")))?;
    let spec_path = scratch.path().join("spec.json");
    let weights_path = scratch.path().join("weights.npz");
    let script_path = scratch.path().join("export_torchscript.py");
    std::fs::write(&spec_path, description.to_string())
        .and_then(|()| std::fs::write(&script_path, include_str!("export_torchscript.py")))
        .map_err(|e| fail(e.to_string()))?;
    let mut variables: Vec<_> = model.var_store().variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::Tensor::write_npz(&variables, &weights_path).map_err(oxray_rl::Error::from)?;
    let python = oxray_gym::python_executable();
    let output = Command::new(&python)
        .arg(&script_path)
        .arg(&spec_path)
        .arg(&weights_path)
        .arg(staged.path())
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", python.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = match stderr.trim_end() {
            "" => String::new(),
            said => format!(":\n{said}"),
        };
        return Err(fail(format!(
            "{} failed ({}){said}",
            python.display(),
            output.status
        ))
        .into());
    }
    let names = serde_json::from_slice(&output.stdout)
        .map_err(|e| fail(format!("unexpected output from the export script: {e}")))?;
    staged
        .persist(out)
        .map_err(|e| fail(format!("cannot replace it: {}", e.error)))?;
    Ok(names)
}

/// A CNN encoder as the export script rebuilds it: the image's layout,
/// each convolution with its padding, the activation, and the scale bytes
/// get; `null` for an MLP.
fn cnn_description(encoder: &EncoderSpec) -> serde_json::Value {
    let EncoderSpec::Cnn {
        image,
        channels_last,
        filters,
        activation,
        input,
    } = encoder
    else {
        return serde_json::Value::Null;
    };
    let layers: Vec<_> = filters
        .iter()
        .zip(encoder.conv_paddings())
        .map(|(filter, padding)| {
            json!({
                "out_channels": filter.out_channels,
                "kernel": filter.kernel,
                "stride": filter.stride,
                "padding": padding,
            })
        })
        .collect();
    json!({
        "image": image,
        "channels_last": channels_last,
        "layers": layers,
        "activation": activation,
        "bytes": *input == ObsDType::U8,
    })
}

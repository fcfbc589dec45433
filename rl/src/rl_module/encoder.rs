//! Observation encoders: the trunk that turns an observation into features
//! for a module's heads. Which one a module gets depends on the observation
//! space ([`EncoderSpec::for_observations`]): an MLP over the flattened
//! observation, or for images (rank-3 boxes) a CNN with RLlib's default
//! `conv_filters` for the image size, or the config's own. Heads only see
//! [`Encoder::output_dim`] features, so the choice changes no head.
//!
//! Image bytes (`uint8` boxes) arrive as they were sampled, bytes from a
//! Learner's batch or whole-number floats from an EnvRunner's env; the CNN's
//! first step turns either into floats in `[0, 1]` (÷255) on the module's
//! device, so nothing before it holds a float copy of a frame.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::{linear, Activation, DenseLayer, HostMlp, ModelConfig};
use crate::obs_buffer::ObsDType;

/// One convolution of a CNN encoder, RLlib's `[out_channels, [kh, kw],
/// stride]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(i64, [i64; 2], i64)", into = "(i64, [i64; 2], i64)")]
pub struct ConvFilter {
    pub out_channels: i64,
    pub kernel: [i64; 2],
    pub stride: i64,
}

impl From<(i64, [i64; 2], i64)> for ConvFilter {
    fn from((out_channels, kernel, stride): (i64, [i64; 2], i64)) -> Self {
        ConvFilter {
            out_channels,
            kernel,
            stride,
        }
    }
}

impl From<ConvFilter> for (i64, [i64; 2], i64) {
    fn from(f: ConvFilter) -> Self {
        (f.out_channels, f.kernel, f.stride)
    }
}

/// RLlib's default filters (`get_filter_config`) by image height and width.
fn default_conv_filters(height: i64, width: i64) -> Option<Vec<ConvFilter>> {
    let filters = |layers: &[(i64, i64, i64)]| {
        layers
            .iter()
            .map(|&(out_channels, k, stride)| ConvFilter {
                out_channels,
                kernel: [k, k],
                stride,
            })
            .collect()
    };
    match (height, width) {
        (96, 96) => Some(filters(&[(16, 8, 4), (32, 4, 2), (256, 11, 2)])),
        (84, 84) => Some(filters(&[(16, 8, 4), (32, 4, 2), (256, 11, 1)])),
        (64, 64) => Some(filters(&[(16, 4, 2), (32, 4, 2), (64, 4, 2), (128, 4, 2)])),
        (42, 42) => Some(filters(&[(16, 4, 2), (32, 4, 2), (256, 11, 1)])),
        (10, 10) => Some(filters(&[(16, 5, 2), (32, 5, 2)])),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EncoderError {
    #[error(
        "image observations of shape {shape:?} have no default model.conv_filters \
         (RLlib's defaults cover 96x96, 84x84, 64x64, 42x42 and 10x10 images); \
         set model.conv_filters, e.g. [[16, [3, 3], 1], [32, [3, 3], 1]]"
    )]
    NoDefaultConvFilters { shape: Vec<usize> },
    #[error(
        "model.conv_filters {filters:?} do not fit images of shape {shape:?}: \
         the last filter's {kernel:?} kernel is larger than the {height}x{width} \
         image the filters before it leave"
    )]
    FiltersTooLarge {
        shape: Vec<usize>,
        filters: Vec<ConvFilter>,
        kernel: [i64; 2],
        height: i64,
        width: i64,
    },
    #[error("model.conv_filters must not be empty, and every size and stride must be positive")]
    InvalidConvFilters,
}

/// An encoder's shape, serialisable so every process builds the same one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EncoderSpec {
    /// Fully connected layers over the flattened observation (RLlib's
    /// `fcnet_hiddens`, `fcnet_activation`).
    Mlp {
        input_dim: i64,
        hiddens: Vec<i64>,
        activation: Activation,
    },
    /// Convolutions over an image (RLlib's `conv_filters`,
    /// `conv_activation`): "same" padding (as TensorFlow pads) for every
    /// filter but the last, which is "valid", so RLlib's 84x84 filters end
    /// in 1x1x256 features; then flattened.
    Cnn {
        /// Height, width, channels.
        image: [i64; 3],
        /// Rows are `[H, W, C]` (Gymnasium's image layout) rather than
        /// `[C, H, W]` (a stack of grayscale frames).
        channels_last: bool,
        filters: Vec<ConvFilter>,
        activation: Activation,
        /// `U8`: bytes, divided by 255 at the input.
        input: ObsDType,
    },
}

impl EncoderSpec {
    /// The encoder for observations of `shape` and element type `dtype`: a
    /// CNN for rank-3 shapes (images), an MLP over the flattened observation
    /// otherwise.
    pub fn for_observations(
        shape: &[usize],
        dtype: ObsDType,
        model: &ModelConfig,
    ) -> Result<Self, EncoderError> {
        let &[a, b, c] = shape else {
            return Ok(EncoderSpec::Mlp {
                input_dim: shape.iter().product::<usize>() as i64,
                hiddens: model.fcnet_hiddens.clone(),
                activation: model.fcnet_activation,
            });
        };
        // `[4, 84, 84]` is a frame stack, `[84, 84, 3]` an RGB image.
        let channels_last = a >= c;
        let [height, width, channels] =
            if channels_last { [a, b, c] } else { [b, c, a] }.map(|d| d as i64);
        let filters = match &model.conv_filters {
            Some(filters) => filters.clone(),
            None => default_conv_filters(height, width).ok_or_else(|| {
                EncoderError::NoDefaultConvFilters {
                    shape: shape.to_vec(),
                }
            })?,
        };
        if filters.is_empty()
            || filters
                .iter()
                .any(|f| f.out_channels < 1 || f.stride < 1 || f.kernel.iter().any(|&k| k < 1))
        {
            return Err(EncoderError::InvalidConvFilters);
        }
        let spec = EncoderSpec::Cnn {
            image: [height, width, channels],
            channels_last,
            filters: filters.clone(),
            activation: model.conv_activation,
            input: dtype,
        };
        let [out_h, out_w] = spec.conv_output_size();
        if out_h < 1 || out_w < 1 {
            let kernel = filters.last().expect("not empty").kernel;
            let sizes = conv_sizes(&filters, [height, width]);
            let [h, w] = match sizes.len() {
                1 => [height, width],
                n => sizes[n - 2].output,
            };
            return Err(EncoderError::FiltersTooLarge {
                shape: shape.to_vec(),
                filters,
                kernel,
                height: h,
                width: w,
            });
        }
        Ok(spec)
    }

    /// The element type a batch should keep this encoder's input in.
    pub fn input_dtype(&self) -> ObsDType {
        match self {
            EncoderSpec::Mlp { .. } => ObsDType::F32,
            EncoderSpec::Cnn { input, .. } => *input,
        }
    }

    /// The same encoder over `extra` more inputs concatenated to the
    /// flattened observation (SAC's Q(s, a) reads the action too).
    pub fn with_extra_inputs(self, extra: i64) -> Self {
        match self {
            EncoderSpec::Mlp {
                input_dim,
                hiddens,
                activation,
            } => EncoderSpec::Mlp {
                input_dim: input_dim + extra,
                hiddens,
                activation,
            },
            // A CNN has no flat input to append to: `env_runner::module_spec`
            // rejects SAC on images with a Box action space, and a Discrete
            // one's Q-functions ask for no extra inputs.
            cnn @ EncoderSpec::Cnn { .. } => cnn,
        }
    }

    /// How many equal planes an observation is made of along its first
    /// axis: a stack of frames' frames (channels first), else 1. Successive
    /// observations of a stack share all but one plane.
    pub fn observation_planes(&self) -> usize {
        match self {
            EncoderSpec::Cnn {
                image: [_, _, channels],
                channels_last: false,
                ..
            } => *channels as usize,
            _ => 1,
        }
    }

    /// Width of the features the encoder outputs.
    pub fn output_dim(&self) -> i64 {
        match self {
            EncoderSpec::Mlp {
                input_dim, hiddens, ..
            } => hiddens.last().copied().unwrap_or(*input_dim),
            EncoderSpec::Cnn { filters, .. } => {
                let [out_h, out_w] = self.conv_output_size();
                filters.last().map_or(0, |f| f.out_channels) * out_h * out_w
            }
        }
    }

    /// Each convolution's zero padding of a CNN, `[left, right, top,
    /// bottom]` (libtorch's `constant_pad_nd` order); none for an MLP.
    pub fn conv_paddings(&self) -> Vec<[i64; 4]> {
        match self {
            EncoderSpec::Mlp { .. } => Vec::new(),
            EncoderSpec::Cnn { image, filters, .. } => conv_sizes(filters, [image[0], image[1]])
                .into_iter()
                .map(|size| size.padding)
                .collect(),
        }
    }

    /// Height and width after the last convolution of a CNN.
    fn conv_output_size(&self) -> [i64; 2] {
        match self {
            EncoderSpec::Mlp { .. } => [1, 1],
            EncoderSpec::Cnn { image, filters, .. } => {
                let sizes = conv_sizes(filters, [image[0], image[1]]);
                sizes.last().map_or([image[0], image[1]], |s| s.output)
            }
        }
    }
}

/// One convolution's geometry: the padding it needs (left, right, top,
/// bottom) and the size it outputs.
struct ConvSize {
    padding: [i64; 4],
    output: [i64; 2],
}

/// The geometry of every filter over an image of `[height, width]`: "same"
/// padding for all but the last, "valid" for the last.
fn conv_sizes(filters: &[ConvFilter], [height, width]: [i64; 2]) -> Vec<ConvSize> {
    let mut size = [height, width];
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let valid = i + 1 == filters.len();
            let mut padding = [0; 4];
            for (axis, (side, &k)) in size.iter_mut().zip(&f.kernel).enumerate() {
                let n = *side;
                *side = if valid {
                    (n - k).div_euclid(f.stride) + 1
                } else {
                    let out = (n + f.stride - 1) / f.stride;
                    let total = ((out - 1) * f.stride + k - n).max(0);
                    // Width pads come first in libtorch's pad order.
                    let slot = 2 * (1 - axis);
                    padding[slot] = total / 2;
                    padding[slot + 1] = total - total / 2;
                    out
                };
            }
            ConvSize {
                padding,
                output: size,
            }
        })
        .collect()
}

pub struct Encoder {
    net: nn::Sequential,
    output_dim: i64,
    /// An MLP's layers (handles on the same variables as `net`'s) and
    /// activation, for [`Encoder::host_mlp`]; `None` for a CNN.
    mlp: Option<(Vec<nn::Linear>, Activation)>,
}

fn activate(net: nn::Sequential, activation: Activation) -> nn::Sequential {
    match activation {
        Activation::Tanh => net.add_fn(Tensor::tanh),
        Activation::Relu => net.add_fn(Tensor::relu),
        Activation::Linear => net,
    }
}

impl Encoder {
    /// Layers get orthogonal init with gain √2, as CleanRL's agents.
    pub fn new(path: nn::Path, spec: &EncoderSpec) -> Self {
        match spec {
            EncoderSpec::Mlp {
                input_dim,
                hiddens,
                activation,
            } => {
                let mut net = nn::seq();
                let mut layers = Vec::new();
                let mut width = *input_dim;
                for (i, &size) in hiddens.iter().enumerate() {
                    let layer = linear(&path / i, width, size, 2f64.sqrt());
                    layers.push(nn::Linear {
                        ws: layer.ws.shallow_clone(),
                        bs: layer.bs.as_ref().map(Tensor::shallow_clone),
                    });
                    net = activate(net.add(layer), *activation);
                    width = size;
                }
                Encoder {
                    net,
                    output_dim: width,
                    mlp: Some((layers, *activation)),
                }
            }
            EncoderSpec::Cnn {
                image: [height, width, channels],
                channels_last,
                filters,
                activation,
                input,
            } => {
                let (h, w, c, channels_last) = (*height, *width, *channels, *channels_last);
                let scale = match input {
                    ObsDType::U8 => Some(1.0 / 255.0),
                    ObsDType::F32 => None,
                };
                let mut net = nn::seq().add_fn(move |obs| {
                    let x = obs.to_kind(Kind::Float);
                    let x = match scale {
                        Some(scale) => x * scale,
                        None => x,
                    };
                    if channels_last {
                        x.view([-1, h, w, c]).permute([0, 3, 1, 2])
                    } else {
                        x.view([-1, c, h, w])
                    }
                });
                let mut in_channels = c;
                for (i, (filter, size)) in
                    filters.iter().zip(conv_sizes(filters, [h, w])).enumerate()
                {
                    if size.padding.iter().any(|&p| p > 0) {
                        let padding = size.padding;
                        net = net.add_fn(move |x| x.constant_pad_nd(padding));
                    }
                    let config = nn::ConvConfigND {
                        stride: [filter.stride; 2],
                        padding: [0, 0],
                        dilation: [1, 1],
                        groups: 1,
                        bias: true,
                        ws_init: nn::Init::Const(0.0),
                        bs_init: nn::Init::Const(0.0),
                        padding_mode: nn::PaddingMode::Zeros,
                    };
                    let mut conv = nn::conv(
                        &path / i,
                        in_channels,
                        filter.out_channels,
                        filter.kernel,
                        config,
                    );
                    // Set on the created weight: tch's `ws_init` would make
                    // an orthogonal weight 2-D, not `[out, in, kh, kw]`.
                    conv.ws.init(nn::Init::Orthogonal { gain: 2f64.sqrt() });
                    net = net.add(conv);
                    net = activate(net, *activation);
                    in_channels = filter.out_channels;
                }
                Encoder {
                    net: net.add_fn(|x| x.flatten(1, -1)),
                    output_dim: spec.output_dim(),
                    mlp: None,
                }
            }
        }
    }

    /// Features for a batch of flattened observations `[B, obs_dim]`
    /// (`Float`, or `Uint8` image bytes for a CNN).
    pub fn forward(&self, obs: &Tensor) -> Tensor {
        self.net.forward(obs)
    }

    /// Width of the features.
    pub fn output_dim(&self) -> i64 {
        self.output_dim
    }

    /// A host copy of an MLP encoder's current weights; `None` for a CNN.
    pub fn host_mlp(&self) -> Option<HostMlp> {
        let (layers, activation) = self.mlp_layers()?;
        Some(HostMlp::new(
            layers.iter().map(DenseLayer::of).collect(),
            activation,
        ))
    }

    /// An MLP encoder's layers, in order, and its activation; `None` for a CNN.
    pub fn mlp_layers(&self) -> Option<(&[nn::Linear], Activation)> {
        let (layers, activation) = self.mlp.as_ref()?;
        Some((layers, *activation))
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    fn model(conv_filters: Option<Vec<ConvFilter>>) -> ModelConfig {
        ModelConfig {
            conv_filters,
            ..ModelConfig::default()
        }
    }

    fn cnn(shape: &[usize], dtype: ObsDType, model: &ModelConfig) -> (EncoderSpec, Encoder) {
        let spec = EncoderSpec::for_observations(shape, dtype, model).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let encoder = Encoder::new(vs.root() / "pi", &spec);
        (spec, encoder)
    }

    fn numel(shape: &[usize]) -> i64 {
        shape.iter().product::<usize>() as i64
    }

    /// RLlib's 84x84 filters end in 1x1x256 features ("same" padding, a
    /// "valid" last layer) for a channel-last RGB image and for a stack of
    /// grayscale frames alike; 64x64 images get the 4-layer filters
    /// (64 → 32 → 16 → 8 → 3). Bytes in, floats out, and the bytes give
    /// exactly the features their whole-number floats give (what an
    /// EnvRunner's env hands over), so acting and learning see one input.
    #[test]
    fn image_bytes_become_rllib_default_cnn_features() {
        for (shape, features) in [
            ([84, 84, 3], 256),
            ([4, 84, 84], 256),
            ([64, 64, 3], 3 * 3 * 128),
        ] {
            let (spec, encoder) = cnn(&shape, ObsDType::U8, &ModelConfig::default());
            assert_eq!(spec.input_dtype(), ObsDType::U8);
            assert_eq!(encoder.output_dim(), features, "{shape:?}");
            let frames = Tensor::randint(256, [5, numel(&shape)], (Kind::Uint8, Device::Cpu));
            let out = encoder.forward(&frames);
            assert_eq!(out.size(), [5, features], "{shape:?}");
            assert_eq!(out.kind(), Kind::Float);
            let as_floats = encoder.forward(&frames.to_kind(Kind::Float));
            assert!(out.equal(&as_floats));
            assert!(out.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
    }

    /// TensorFlow's "same" padding puts the odd pixel on the right and the
    /// bottom; the last filter is "valid" (RLlib's 84x84 filters: 84 → 21
    /// pads 2 each side, 21 → 11 pads 1 then 2, 11 → 1 none). A stack of
    /// four frames is four planes; an RGB image and a vector are one.
    #[test]
    fn same_padding_puts_the_odd_pixel_last_and_a_stack_has_a_plane_per_frame() {
        let spec =
            EncoderSpec::for_observations(&[4, 84, 84], ObsDType::U8, &ModelConfig::default())
                .unwrap();
        assert_eq!(
            spec.conv_paddings(),
            [[2, 2, 2, 2], [1, 2, 1, 2], [0, 0, 0, 0]]
        );
        assert_eq!(spec.output_dim(), 256);
        assert_eq!(spec.observation_planes(), 4);
        let rgb = EncoderSpec::for_observations(&[84, 84, 3], ObsDType::U8, &model(None)).unwrap();
        assert_eq!(rgb.observation_planes(), 1);
        let mlp = EncoderSpec::for_observations(&[3], ObsDType::F32, &model(None)).unwrap();
        assert!(mlp.conv_paddings().is_empty());
        assert_eq!(mlp.observation_planes(), 1);
    }

    /// Scaling is for bytes only: a float image goes in as it is, so the
    /// same weights give on 1.0 floats what they give on 255 bytes.
    #[test]
    fn float_images_are_not_rescaled() {
        let config = model(Some(vec![ConvFilter::from((4, [3, 3], 1))]));
        let build = |dtype| {
            let spec = EncoderSpec::for_observations(&[5, 5, 1], dtype, &config).unwrap();
            let vs = nn::VarStore::new(Device::Cpu);
            let encoder = Encoder::new(vs.root() / "pi", &spec);
            (vs, encoder)
        };
        let (floats_vs, floats) = build(ObsDType::F32);
        let (mut bytes_vs, bytes) = build(ObsDType::U8);
        bytes_vs.copy(&floats_vs).unwrap();
        assert_eq!(floats.output_dim(), 4 * 3 * 3);
        let ones = Tensor::ones([1, 25], (Kind::Float, Device::Cpu));
        let full = Tensor::full([1, 25], 255, (Kind::Uint8, Device::Cpu));
        assert!(floats
            .forward(&ones)
            .allclose(&bytes.forward(&full), 1e-5, 1e-6, false));
    }

    /// Configured filters replace the defaults (MiniGrid's 7x7 views have
    /// none); shapes without defaults, and filters that shrink the image to
    /// nothing, are errors that say what to set.
    #[test]
    fn conv_filters_come_from_the_config_or_the_error_says_to_set_them() {
        let filters = vec![
            ConvFilter::from((16, [3, 3], 1)),
            ConvFilter::from((32, [3, 3], 1)),
        ];
        let (_, encoder) = cnn(&[7, 7, 3], ObsDType::U8, &model(Some(filters)));
        assert_eq!(encoder.output_dim(), 32 * 5 * 5);
        let none = EncoderSpec::for_observations(&[7, 7, 3], ObsDType::U8, &model(None));
        assert_eq!(
            none,
            Err(EncoderError::NoDefaultConvFilters {
                shape: vec![7, 7, 3]
            })
        );
        assert!(none.unwrap_err().to_string().contains("model.conv_filters"));
        let too_large = vec![
            ConvFilter::from((8, [2, 2], 2)),
            ConvFilter::from((8, [9, 9], 1)),
        ];
        let err = EncoderSpec::for_observations(&[7, 7, 3], ObsDType::U8, &model(Some(too_large)));
        assert!(
            matches!(
                err,
                Err(EncoderError::FiltersTooLarge {
                    height: 4,
                    width: 4,
                    ..
                })
            ),
            "{err:?}"
        );
        let mlp = EncoderSpec::for_observations(&[4], ObsDType::F32, &model(None)).unwrap();
        assert_eq!(mlp.input_dtype(), ObsDType::F32);
    }
}

//! The protobuf messages of TensorBoard's event files that oxray writes, and
//! builders for the summaries an RL run needs: scalars, histograms, text and
//! HParams session info.
//!
//! The messages are declared here with `prost`'s derive macros and the field
//! numbers of TensorFlow's `event.proto`, `summary.proto`, `tensor.proto` and
//! TensorBoard's `hparams/plugin_data.proto`, keeping only the fields used.
//! Declaring them in Rust (rather than compiling `.proto` files) needs no
//! `protoc` at build time, and unknown fields are simply absent on the wire,
//! which every protobuf reader accepts.

use std::collections::BTreeMap;

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// `brain.Event:2`, the first record of every file.
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`: one tagged value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "Value", tags = "2, 5, 8")]
    pub value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "5")]
    Histo(HistogramProto),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `tensorflow.HistogramProto`: bucket `i` counts the values in
/// `(bucket_limit[i-1], bucket_limit[i]]`, the first from `min`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramProto {
    #[prost(double, tag = "1")]
    pub min: f64,
    #[prost(double, tag = "2")]
    pub max: f64,
    #[prost(double, tag = "3")]
    pub num: f64,
    #[prost(double, tag = "4")]
    pub sum: f64,
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// `tensorflow.TensorProto`, for scalar string and float tensors.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// `tensorflow.DataType`.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// Absent dims: a scalar.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` with no dims: a scalar.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {}

const DT_FLOAT: i32 = 1;
const DT_STRING: i32 = 7;

/// `tensorflow.SummaryMetadata`: which TensorBoard plugin owns a value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
    /// `tensorflow.DataClass`.
    #[prost(int32, tag = "4")]
    pub data_class: i32,
}

/// `DATA_CLASS_TENSOR`: a tensor per step, as text and HParams store them.
const DATA_CLASS_TENSOR: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorboard.hparams.HParamsPluginData`, holding a session start.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(message, optional, tag = "3")]
    pub session_start_info: Option<SessionStartInfo>,
}

/// `tensorboard.hparams.SessionStartInfo`: one run's hyperparameters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, HParamValue>,
    #[prost(string, tag = "4")]
    pub group_name: String,
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `google.protobuf.Value`, restricted to the kinds hparams take.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamValue {
    #[prost(oneof = "HParamKind", tags = "2, 3, 4")]
    pub kind: Option<HParamKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum HParamKind {
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    String(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
}

/// The tag TensorBoard's HParams plugin reads a run's session start from.
pub const SESSION_START_INFO_TAG: &str = "_hparams_/session_start_info";

impl Summary {
    /// Scalars as `simple_value`s, the form every TensorBoard version reads.
    pub fn scalars<'a>(values: impl IntoIterator<Item = (&'a str, f64)>) -> Self {
        Summary {
            value: values
                .into_iter()
                .map(|(tag, v)| SummaryValue {
                    tag: tag.to_string(),
                    metadata: None,
                    value: Some(Value::SimpleValue(v as f32)),
                })
                .collect(),
        }
    }

    /// A histogram of `values` (non-finite ones left out), or an empty
    /// summary if no finite value remains.
    pub fn histogram(tag: &str, values: &[f32]) -> Self {
        Summary {
            value: HistogramProto::of(values)
                .map(|histo| SummaryValue {
                    tag: tag.to_string(),
                    metadata: None,
                    value: Some(Value::Histo(histo)),
                })
                .into_iter()
                .collect(),
        }
    }

    /// Markdown `text` for TensorBoard's Text tab.
    pub fn text(tag: &str, text: &str) -> Self {
        Summary {
            value: vec![SummaryValue {
                tag: tag.to_string(),
                metadata: Some(plugin_metadata("text", Vec::new())),
                value: Some(Value::Tensor(TensorProto {
                    dtype: DT_STRING,
                    tensor_shape: Some(TensorShapeProto {}),
                    float_val: Vec::new(),
                    string_val: vec![text.as_bytes().to_vec()],
                })),
            }],
        }
    }

    /// The HParams plugin's session start: this run's hyperparameters. The
    /// value itself is a placeholder float tensor, as in TensorBoard's own
    /// `hparams` summaries; the data is in the metadata.
    pub fn session_start(hparams: BTreeMap<String, HParamValue>, start_time_secs: f64) -> Self {
        let content = HParamsPluginData {
            version: 0,
            session_start_info: Some(SessionStartInfo {
                hparams,
                group_name: String::new(),
                start_time_secs,
            }),
        };
        Summary {
            value: vec![SummaryValue {
                tag: SESSION_START_INFO_TAG.to_string(),
                metadata: Some(plugin_metadata(
                    "hparams",
                    prost::Message::encode_to_vec(&content),
                )),
                value: Some(Value::Tensor(TensorProto {
                    dtype: DT_FLOAT,
                    tensor_shape: Some(TensorShapeProto {}),
                    float_val: vec![0.0],
                    string_val: Vec::new(),
                })),
            }],
        }
    }
}

fn plugin_metadata(plugin_name: &str, content: Vec<u8>) -> SummaryMetadata {
    SummaryMetadata {
        plugin_data: Some(PluginData {
            plugin_name: plugin_name.to_string(),
            content,
        }),
        data_class: DATA_CLASS_TENSOR,
    }
}

/// Equal-width buckets over `[min, max]`; TensorBoard re-buckets for display.
const HISTOGRAM_BUCKETS: usize = 30;

impl HistogramProto {
    fn of(values: &[f32]) -> Option<Self> {
        let finite: Vec<f64> = values
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| f64::from(v))
            .collect();
        let min = finite.iter().copied().reduce(f64::min)?;
        let max = finite.iter().copied().reduce(f64::max)?;
        let buckets = if max > min { HISTOGRAM_BUCKETS } else { 1 };
        let width = (max - min) / buckets as f64;
        let mut bucket_limit: Vec<f64> = (1..=buckets).map(|i| min + width * i as f64).collect();
        bucket_limit[buckets - 1] = max;
        let mut bucket = vec![0.0; buckets];
        for &v in &finite {
            let index = bucket_limit.partition_point(|&limit| limit < v);
            bucket[index.min(buckets - 1)] += 1.0;
        }
        Some(HistogramProto {
            min,
            max,
            num: finite.len() as f64,
            sum: finite.iter().sum(),
            sum_squares: finite.iter().map(|v| v * v).sum(),
            bucket_limit,
            bucket,
        })
    }
}

impl HParamValue {
    pub fn number(v: f64) -> Self {
        HParamValue {
            kind: Some(HParamKind::Number(v)),
        }
    }

    pub fn string(s: impl Into<String>) -> Self {
        HParamValue {
            kind: Some(HParamKind::String(s.into())),
        }
    }

    pub fn bool(b: bool) -> Self {
        HParamValue {
            kind: Some(HParamKind::Bool(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_every_finite_value_once() {
        let values = [0.0f32, 0.0, 1.0, 0.5, f32::NAN, 1.0, 1.0];
        let histo = HistogramProto::of(&values).unwrap();
        assert_eq!((histo.min, histo.max, histo.num), (0.0, 1.0, 6.0));
        assert_eq!(histo.bucket.iter().sum::<f64>(), 6.0);
        assert_eq!(histo.bucket[0], 2.0, "the zeros are in the first bucket");
        assert_eq!(histo.bucket[HISTOGRAM_BUCKETS - 1], 3.0);
        assert_eq!(histo.sum, 3.5);
        assert_eq!(histo.sum_squares, 3.25);
        assert_eq!(*histo.bucket_limit.last().unwrap(), 1.0);
    }

    #[test]
    fn histogram_of_equal_values_is_one_bucket() {
        let histo = HistogramProto::of(&[2.0; 5]).unwrap();
        assert_eq!(histo.bucket_limit, [2.0]);
        assert_eq!(histo.bucket, [5.0]);
    }

    #[test]
    fn histogram_of_nothing_finite_is_left_out() {
        assert!(Summary::histogram("h", &[f32::INFINITY]).value.is_empty());
        assert!(Summary::histogram("h", &[]).value.is_empty());
    }
}

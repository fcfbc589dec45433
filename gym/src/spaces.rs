//! Gymnasium spaces as oxray [`Space`]s, from the JSON form the bridge
//! module writes (`describe_space` in `bridge.py`).
//!
//! Boxes of any dtype map to a `Box`: `uint8` boxes (images) stay `uint8`, so
//! the model knows to keep them as bytes and scale them at its input; other
//! integer boxes become `float32` boxes with the same bounds, since the model
//! reads `f32` rows; `float64` stays `float64`. Infinite bounds arrive as the strings `"inf"` and
//! `"-inf"`, which JSON needs.

use oxray_envs::{BoxSpace, DType, EnvError, Space};
use serde_json::Value as Json;
use std::collections::BTreeMap;

fn malformed(json: &Json) -> EnvError {
    EnvError::InvalidSpace {
        reason: format!("the bridge described a space as {json}, which oxray cannot read"),
    }
}

fn bound(json: &Json) -> Option<f64> {
    match json {
        Json::String(s) if s == "inf" => Some(f64::INFINITY),
        Json::String(s) if s == "-inf" => Some(f64::NEG_INFINITY),
        other => other.as_f64(),
    }
}

fn bounds(json: &Json) -> Option<Vec<f64>> {
    json.as_array()?.iter().map(bound).collect()
}

fn integer(json: &Json, key: &str) -> Option<i64> {
    json.get(key)?.as_i64()
}

/// The oxray space for a bridge space description.
pub fn space_from_json(json: &Json) -> Result<Space, EnvError> {
    let bad = || malformed(json);
    let (kind, body) = json
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .ok_or_else(bad)?;
    match kind.as_str() {
        "Box" => {
            let low = body.get("low").and_then(bounds).ok_or_else(bad)?;
            let high = body.get("high").and_then(bounds).ok_or_else(bad)?;
            let shape = body
                .get("shape")
                .and_then(Json::as_array)
                .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
                .ok_or_else(bad)?;
            let dtype = match body.get("dtype").and_then(Json::as_str) {
                Some("float64") => DType::F64,
                Some("uint8") => DType::U8,
                _ => DType::F32,
            };
            Ok(Space::Box(BoxSpace::new(low, high, shape, dtype)?))
        }
        "Discrete" => Ok(Space::Discrete {
            n: integer(body, "n").ok_or_else(bad)?,
            start: integer(body, "start").ok_or_else(bad)?,
        }),
        "MultiDiscrete" => Ok(Space::MultiDiscrete {
            nvec: body
                .get("nvec")
                .and_then(Json::as_array)
                .and_then(|n| n.iter().map(Json::as_i64).collect())
                .ok_or_else(bad)?,
        }),
        "MultiBinary" => Ok(Space::MultiBinary {
            n: integer(body, "n").ok_or_else(bad)? as usize,
        }),
        "Tuple" => body
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(space_from_json)
            .collect::<Result<_, _>>()
            .map(Space::Tuple),
        "Dict" => body
            .as_object()
            .ok_or_else(bad)?
            .iter()
            .map(|(key, space)| Ok((key.clone(), space_from_json(space)?)))
            .collect::<Result<BTreeMap<_, _>, EnvError>>()
            .map(Space::Dict),
        _ => Err(bad()),
    }
}

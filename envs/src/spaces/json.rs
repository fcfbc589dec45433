//! JSON forms of space elements, for action files, replays and logs: an
//! integer for `Discrete`, an array of numbers for `Box` (nested arrays are
//! accepted and raveled), an array of integers for `MultiDiscrete` and
//! `MultiBinary`, an array for `Tuple`, an object for `Dict`.

use super::{Space, Value};

impl Space {
    /// Parses `json` as an element of this space's kind. Only the shape of
    /// the JSON is checked here (bounds are the env's business, since some
    /// envs clip); the error says what was expected and what was found.
    pub fn value_from_json(&self, json: &serde_json::Value) -> Result<Value, String> {
        let found = || format!("expected {} for {self}, found {json}", self.json_kind());
        match self {
            Space::Discrete { .. } => json.as_i64().map(Value::Int).ok_or_else(found),
            Space::Box(space) => {
                let mut values = Vec::with_capacity(space.len());
                ravel_numbers(json, &mut values).ok_or_else(found)?;
                if values.len() != space.len() {
                    return Err(format!("{}, which has {} numbers", found(), values.len()));
                }
                Ok(Value::Floats(values))
            }
            Space::MultiDiscrete { .. } | Space::MultiBinary { .. } => {
                let items = json.as_array().ok_or_else(found)?;
                let ints = items
                    .iter()
                    .map(serde_json::Value::as_i64)
                    .collect::<Option<Vec<_>>>();
                let ints = ints.ok_or_else(found)?;
                if ints.len() != self.shape()[0] {
                    return Err(found());
                }
                Ok(Value::Ints(ints))
            }
            Space::Tuple(spaces) => {
                let items = json
                    .as_array()
                    .filter(|a| a.len() == spaces.len())
                    .ok_or_else(found)?;
                let values = spaces.iter().zip(items).map(|(s, x)| s.value_from_json(x));
                Ok(Value::Tuple(values.collect::<Result<_, _>>()?))
            }
            Space::Dict(spaces) => {
                let object = json
                    .as_object()
                    .filter(|o| o.len() == spaces.len())
                    .ok_or_else(found)?;
                let values = spaces.iter().map(|(key, space)| {
                    let item = object
                        .get(key)
                        .ok_or_else(|| format!("missing key `{key}` for {self}"))?;
                    Ok((key.clone(), space.value_from_json(item)?))
                });
                Ok(Value::Dict(values.collect::<Result<_, String>>()?))
            }
        }
    }

    fn json_kind(&self) -> &'static str {
        match self {
            Space::Discrete { .. } => "an integer",
            Space::Box(_) => "an array of numbers",
            Space::MultiDiscrete { .. } | Space::MultiBinary { .. } => "an array of integers",
            Space::Tuple(_) => "an array",
            Space::Dict(_) => "an object",
        }
    }
}

/// Appends every number of a (possibly nested) array; `None` if anything
/// else is found.
fn ravel_numbers(json: &serde_json::Value, out: &mut Vec<f64>) -> Option<()> {
    match json {
        serde_json::Value::Number(n) => out.push(n.as_f64()?),
        serde_json::Value::Array(items) => items.iter().try_for_each(|x| ravel_numbers(x, out))?,
        _ => return None,
    }
    Some(())
}

impl Value {
    /// The JSON form described in the module docs.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Int(x) => (*x).into(),
            Value::Ints(xs) => xs.clone().into(),
            Value::Floats(xs) => xs.clone().into(),
            Value::Tuple(xs) => xs.iter().map(Value::to_json).collect(),
            Value::Dict(xs) => serde_json::Value::Object(
                xs.iter().map(|(k, x)| (k.clone(), x.to_json())).collect(),
            ),
        }
    }
}

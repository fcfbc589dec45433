//! A `training:` section made of a base algorithm's keys plus its own, as
//! APPO's is IMPALA's plus the clipped surrogate's and the target network's
//! (RLlib's `APPOConfig` derives from `IMPALAConfig`). Both parts sit at the
//! same level of the YAML section.
//!
//! serde's `flatten` would read such a section, but it buffers the whole
//! section first: an unknown key is then reported at the section's line and
//! without the keys that are valid, and a wrong type loses its line too.
//! Here each key is routed to the part that declares it while the section is
//! read, and its value is type-checked on the spot, so both errors name the
//! key, list or explain what is expected, and point at the key's own line as
//! every other section's errors do.

use std::marker::PhantomData;

use serde::de::{
    self, Deserialize, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// Reads a section whose keys belong either to `Base` or to `Own` (both
/// structs with defaults for every key); a key neither declares is an error
/// listing the keys of both.
pub(crate) fn deserialize<'de, D, Base, Own>(deserializer: D) -> Result<(Base, Own), D::Error>
where
    D: Deserializer<'de>,
    Base: DeserializeOwned,
    Own: DeserializeOwned,
{
    deserializer.deserialize_map(SectionVisitor::<Base, Own>(PhantomData))
}

struct SectionVisitor<Base, Own>(PhantomData<(Base, Own)>);

impl<'de, Base, Own> Visitor<'de> for SectionVisitor<Base, Own>
where
    Base: DeserializeOwned,
    Own: DeserializeOwned,
{
    type Value = (Base, Own);

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a map of training settings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut base = Map::new();
        let mut own = Map::new();
        let known = KnownKey {
            base: field_names::<Base>(),
            own: field_names::<Own>(),
        };
        while let Some((key, part)) = map.next_key_seed(known)? {
            let (part, value) = match part {
                Part::Base => (
                    &mut base,
                    map.next_value_seed(CheckedValue::<Base>::new(&key))?,
                ),
                Part::Own => (
                    &mut own,
                    map.next_value_seed(CheckedValue::<Own>::new(&key))?,
                ),
            };
            part.insert(key, value);
        }
        let base = Base::deserialize(Value::Object(base)).map_err(de::Error::custom)?;
        let own = Own::deserialize(Value::Object(own)).map_err(de::Error::custom)?;
        Ok((base, own))
    }
}

/// Which part of the section declares a key.
#[derive(Clone, Copy)]
enum Part {
    Base,
    Own,
}

/// A key and the part that declares it, rejected while it is read (so the
/// error points at it) when neither does.
#[derive(Clone, Copy)]
struct KnownKey {
    base: &'static [&'static str],
    own: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for KnownKey {
    type Value = (String, Part);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KnownKey {
    type Value = (String, Part);

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a training setting's name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if self.base.contains(&key) {
            Ok((key.to_string(), Part::Base))
        } else if self.own.contains(&key) {
            Ok((key.to_string(), Part::Own))
        } else {
            // Worded as serde's own unknown-field error, with both lists.
            let expected: Vec<String> = (self.base.iter().chain(self.own))
                .map(|name| format!("`{name}`"))
                .collect();
            Err(E::custom(format_args!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            )))
        }
    }
}

/// One key's value, read as data and then checked against the type `Part`
/// gives that key, so a wrong type fails where the value is.
struct CheckedValue<'k, Part> {
    key: &'k str,
    part: PhantomData<Part>,
}

impl<'k, Part> CheckedValue<'k, Part> {
    fn new(key: &'k str) -> Self {
        CheckedValue {
            key,
            part: PhantomData,
        }
    }
}

impl<'de, Part: DeserializeOwned> DeserializeSeed<'de> for CheckedValue<'_, Part> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<Part: DeserializeOwned> CheckedValue<'_, Part> {
    /// `value` if `Part` takes it for the key. Called from the visitor, so
    /// that the YAML reader still knows where the value is.
    fn check<E: de::Error>(&self, value: Value) -> Result<Value, E> {
        let alone = Map::from_iter([(self.key.to_string(), value.clone())]);
        Part::deserialize(Value::Object(alone)).map_err(E::custom)?;
        Ok(value)
    }
}

impl<'de, Part: DeserializeOwned> Visitor<'de> for CheckedValue<'_, Part> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(formatter, "a value for `{}`", self.key)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.check(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.check(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.check(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.check(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.check(Value::from(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.check(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.check(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let value = Value::deserialize(deserializer)?;
        self.check(value)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        self.check(value)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.check(value)
    }
}

/// The field names `T`'s derived `Deserialize` declares, read by asking it to
/// deserialize from a probe that records them and stops.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields recorded"))
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Base {
        lr: f64,
        epochs: usize,
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Own {
        clip: f64,
    }

    /// A document with the section under `training:`, as in a config.
    #[derive(serde::Deserialize)]
    struct Document {
        #[serde(deserialize_with = "deserialize")]
        training: (Base, Own),
    }

    fn read(section: &str) -> Result<(Base, Own), String> {
        let yaml = format!("training:\n  {}", section.replace('\n', "\n  "));
        serde_yaml_ng::from_str::<Document>(&yaml)
            .map(|document| document.training)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn keys_go_to_the_part_that_declares_them() {
        let (base, own) = read("lr: 0.5\nclip: 0.2").unwrap();
        assert_eq!(base, Base { lr: 0.5, epochs: 0 });
        assert_eq!(own, Own { clip: 0.2 });
    }

    #[test]
    fn an_unknown_key_lists_both_parts_keys_at_its_line() {
        let error = read("lr: 0.5\nepochs: 2\nclp: 0.2").unwrap_err();
        assert!(error.contains("unknown field `clp`"), "{error}");
        assert!(error.contains("`lr`, `epochs`, `clip`"), "{error}");
        assert!(error.contains("line 4"), "{error}");
    }

    #[test]
    fn a_wrong_type_is_reported_at_its_line() {
        let error = read("lr: 0.5\nepochs: many").unwrap_err();
        assert!(error.contains("training.epochs: invalid type"), "{error}");
        assert!(error.contains("line 3"), "{error}");
        let error = read("clip: [0.2]\nlr: 0.5").unwrap_err();
        assert!(error.contains("training.clip: invalid type"), "{error}");
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn a_json_section_reads_the_same() {
        let json = serde_json::json!({"epochs": 3, "clip": 0.1});
        let (base, own) = deserialize::<_, Base, Own>(json).unwrap();
        assert_eq!(base.epochs, 3);
        assert_eq!(own.clip, 0.1);
    }
}

//! Spaces: membership, seeded sampling within bounds, flattening round trips
//! and the JSON forms used by action files.

use oxray_envs::{seeded_rng, BoxSpace, DType, Space, Value};
use std::collections::BTreeMap;

fn bounded_box() -> Space {
    Space::Box(
        BoxSpace::new(
            vec![-1.0, 0.0, 5.0],
            vec![1.0, 0.5, 5.0],
            vec![3],
            DType::F32,
        )
        .unwrap(),
    )
}

fn open_box() -> Space {
    let low = vec![f64::NEG_INFINITY, -2.0, f64::NEG_INFINITY, 0.0];
    let high = vec![f64::INFINITY, f64::INFINITY, 3.0, 1.0];
    Space::Box(BoxSpace::new(low, high, vec![2, 2], DType::F64).unwrap())
}

fn nested() -> Space {
    let mut dict = BTreeMap::new();
    dict.insert("position".to_string(), bounded_box());
    dict.insert("mode".to_string(), Space::Discrete { n: 3, start: -1 });
    Space::Tuple(vec![
        Space::Dict(dict),
        Space::MultiDiscrete { nvec: vec![2, 4] },
        Space::MultiBinary { n: 3 },
        open_box(),
    ])
}

fn all_spaces() -> Vec<Space> {
    vec![
        Space::discrete(4),
        Space::Discrete { n: 3, start: -1 },
        bounded_box(),
        open_box(),
        nested(),
    ]
}

#[test]
fn contains_accepts_members_and_rejects_the_rest() {
    let discrete = Space::Discrete { n: 3, start: -1 };
    assert!(discrete.contains(&Value::Int(-1)) && discrete.contains(&Value::Int(1)));
    assert!(!discrete.contains(&Value::Int(2)) && !discrete.contains(&Value::Floats(vec![0.0])));

    let boxed = bounded_box();
    assert!(boxed.contains(&Value::Floats(vec![-1.0, 0.5, 5.0])));
    assert!(!boxed.contains(&Value::Floats(vec![-1.1, 0.5, 5.0])));
    assert!(
        !boxed.contains(&Value::Floats(vec![0.0, 0.0])),
        "wrong length"
    );
    assert!(!boxed.contains(&Value::Floats(vec![f64::NAN, 0.0, 5.0])));

    let multi = Space::MultiDiscrete { nvec: vec![2, 4] };
    assert!(multi.contains(&Value::Ints(vec![1, 3])) && !multi.contains(&Value::Ints(vec![2, 0])));
    let bits = Space::MultiBinary { n: 2 };
    assert!(bits.contains(&Value::Ints(vec![0, 1])) && !bits.contains(&Value::Ints(vec![0, 2])));

    let mut rng = seeded_rng(Some(3));
    let sample = nested().sample(&mut rng);
    assert!(nested().contains(&sample));
    let Value::Tuple(mut parts) = sample else {
        panic!("a tuple")
    };
    parts[1] = Value::Ints(vec![0, 4]);
    assert!(!nested().contains(&Value::Tuple(parts)));
}

#[test]
fn samples_are_members_and_follow_the_seed() {
    for space in all_spaces() {
        let mut rng = seeded_rng(Some(11));
        let draws: Vec<Value> = (0..2000).map(|_| space.sample(&mut rng)).collect();
        assert!(
            draws.iter().all(|v| space.contains(v)),
            "{space}: sample outside the space"
        );
        let mut again = seeded_rng(Some(11));
        assert!(
            draws.iter().all(|v| *v == space.sample(&mut again)),
            "{space}: same seed, same samples"
        );
        let mut other = seeded_rng(Some(12));
        assert!(
            draws.iter().any(|v| *v != space.sample(&mut other)),
            "{space}: another seed differs"
        );
    }
}

#[test]
fn discrete_samples_cover_every_element() {
    let space = Space::Discrete { n: 3, start: -1 };
    let mut rng = seeded_rng(Some(0));
    let mut seen = [false; 3];
    for _ in 0..300 {
        let Value::Int(x) = space.sample(&mut rng) else {
            panic!("an int")
        };
        seen[(x + 1) as usize] = true;
    }
    assert_eq!(seen, [true; 3]);
}

#[test]
fn flatten_round_trips_and_has_gymnasium_layout() {
    for space in all_spaces() {
        let mut rng = seeded_rng(Some(5));
        for _ in 0..200 {
            let value = space.sample(&mut rng);
            let flat = space.flatten(&value).unwrap();
            assert_eq!(flat.len(), space.flatdim(), "{space}");
            let back = space.unflatten(&flat).unwrap();
            // Box elements pass through f32, so compare after the same rounding.
            assert_eq!(space.flatten(&back).unwrap(), flat, "{space}");
            assert!(space.contains(&back), "{space}");
        }
    }
    let discrete = Space::Discrete { n: 3, start: -1 };
    assert_eq!(
        discrete.flatten(&Value::Int(0)).unwrap(),
        vec![0.0, 1.0, 0.0]
    );
    let multi = Space::MultiDiscrete { nvec: vec![2, 3] };
    assert_eq!(
        multi.flatten(&Value::Ints(vec![1, 0])).unwrap(),
        vec![0.0, 1.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(nested().flatdim(), 3 + 3 + 6 + 3 + 4);
    let flat_space = nested().flatten_space();
    assert_eq!(flat_space.shape(), &[19]);
    assert_eq!(
        &flat_space.low()[..3],
        &[0.0, 0.0, 0.0],
        "dict keys in order: `mode` one-hot first"
    );
}

#[test]
fn flatten_and_unflatten_reject_mismatches() {
    let discrete = Space::discrete(3);
    assert!(discrete.flatten(&Value::Int(3)).is_err());
    assert!(
        discrete.unflatten(&[1.0, 1.0, 0.0]).is_err(),
        "two hot entries"
    );
    assert!(discrete.unflatten(&[0.0, 0.0]).is_err(), "wrong length");
    let err = bounded_box().unflatten(&[0.0]).unwrap_err().to_string();
    assert!(err.contains("length 1, expected 3"), "{err}");
}

#[test]
fn json_values_parse_by_space_kind() {
    let boxed = bounded_box();
    let parsed = boxed
        .value_from_json(&serde_json::json!([0.5, 0.25, 5]))
        .unwrap();
    assert_eq!(parsed, Value::Floats(vec![0.5, 0.25, 5.0]));
    assert_eq!(parsed.to_json(), serde_json::json!([0.5, 0.25, 5.0]));
    let err = boxed
        .value_from_json(&serde_json::json!([0.5]))
        .unwrap_err();
    assert!(err.contains("has 1 numbers"), "{err}");
    let err = Space::discrete(2)
        .value_from_json(&serde_json::json!(0.5))
        .unwrap_err();
    assert!(err.contains("expected an integer for Discrete(2)"), "{err}");
    let value = nested().sample(&mut seeded_rng(Some(1)));
    assert_eq!(nested().value_from_json(&value.to_json()).unwrap(), value);
}

#[test]
fn box_rejects_inverted_bounds_and_prints_like_gymnasium() {
    assert!(BoxSpace::new(vec![1.0], vec![0.0], vec![1], DType::F32).is_err());
    assert!(BoxSpace::new(vec![0.0; 2], vec![1.0; 3], vec![2], DType::F32).is_err());
    let space = Space::Box(BoxSpace::uniform(-2.0, 2.0, vec![1], DType::F32).unwrap());
    assert_eq!(space.to_string(), "Box(-2.0, 2.0, (1,), float32)");
    assert_eq!(Space::discrete(2).to_string(), "Discrete(2)");
}

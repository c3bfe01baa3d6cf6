//! Helpers shared by the fuzz targets (each target includes this module).

#![allow(dead_code)]

use serde_json::Value;

/// Splits an input into the part before the first NUL and the part after it.
/// Neither JSON nor YAML text can hold a raw NUL, so a corpus of
/// `original\0patch` files stays readable and the mutator can grow either
/// side. Without a NUL the whole input is the second part.
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[], data),
    }
}

/// The stored object a patch applies to: a JSON object, as the registry only
/// stores objects. An empty first part stands for `{}`.
pub fn original(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return Some(Value::Object(Default::default()));
    }
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .filter(Value::is_object)
}

/// Whatever a decoder or patch produced is stored as JSON and must decode
/// again to the same value, or the object could never be read back.
/// Floats may move by an ulp: serde_json (without its `float_roundtrip`
/// feature) does not always pick the closest double when it reads one.
pub fn assert_round_trips(v: &Value) {
    let text = serde_json::to_vec(v).expect("a Value always serializes");
    let back: Value = match serde_json::from_slice(&text) {
        Ok(back) => back,
        Err(e) => panic!("the result does not decode again: {e}"),
    };
    assert!(
        same(&back, v),
        "the result changed through a JSON round trip: {v} became {back}"
    );
}

/// Equality with floats compared to within a few ulps.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || ((x - y) / x.abs().max(y.abs())).abs() < 1e-14,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, xv)| y.get(k).is_some_and(|yv| same(xv, yv)))
        }
        _ => a == b,
    }
}

//! Decoding one object into its Rust type, with errors that name the field's
//! path and speak of integers, strings and lists, not of `u32` or `i32`. The
//! schema check ([`super::schema`]) runs first and catches nearly everything;
//! this is the last line for what a schema cannot say.
use serde::de::DeserializeOwned;
use serde_json::Value;

pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = in_api_terms(&e.into_inner().to_string());
        if path == "." {
            message
        } else {
            format!("{path}: {message}")
        }
    })
}

/// Rewrites serde's wording (`invalid type: string "3", expected i32`) in the
/// API's (`must be an integer (int32), got the string "3"`).
pub fn in_api_terms(message: &str) -> String {
    if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
        return format!("{field} is required");
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return format!("unsupported value {}", rest.replace('`', "\""));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((got, expected)) = rest.split_once(", expected ") {
                return format!("must be {}, got {}", expected_in_api_terms(expected), got_in_api_terms(got));
            }
        }
    }
    message.to_string()
}

fn expected_in_api_terms(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" => "an integer (int32)".into(),
        "i64" => "an integer (int64)".into(),
        "u8" | "u16" | "u32" | "u64" => "a non-negative integer".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list".into(),
        "a map" => "an object (a map of fields)".into(),
        other if other.starts_with("struct ") => "an object (a map of fields)".into(),
        other => other.replace('`', "\""),
    }
}

fn got_in_api_terms(got: &str) -> String {
    if let Some(n) = got.strip_prefix("integer `").and_then(|g| g.strip_suffix('`')) {
        return n.to_string();
    }
    if let Some(n) = got.strip_prefix("floating point `").and_then(|g| g.strip_suffix('`')) {
        return n.to_string();
    }
    if let Some(s) = got.strip_prefix("string ") {
        return format!("the string {s}");
    }
    match got {
        "sequence" => "a list".into(),
        "map" => "an object".into(),
        other => other.replace('`', ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Spec {
        count: u32,
        port: i32,
        names: Vec<String>,
    }

    #[test]
    fn decode_errors_name_the_path_and_never_a_rust_type() {
        let e = decode::<Spec>(json!({"count": -1, "port": 1, "names": []})).unwrap_err();
        assert_eq!(e, "count: must be a non-negative integer, got -1");
        let e = decode::<Spec>(json!({"count": 1, "port": "3", "names": []})).unwrap_err();
        assert_eq!(e, "port: must be an integer (int32), got the string \"3\"");
        let e = decode::<Spec>(json!({"count": 1, "port": 1, "names": "a"})).unwrap_err();
        assert_eq!(e, "names: must be a list, got the string \"a\"");
        let e = decode::<Spec>(json!({"count": 1, "names": []})).unwrap_err();
        assert_eq!(e, "port is required");
    }
}

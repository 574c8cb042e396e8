//! Checks a JSON value against a structural OpenAPI v3 schema, as the API
//! server would with strict field validation: unknown fields, types, integer
//! formats, ranges, enums, lengths, patterns and required fields. Every problem
//! is reported with its field path (`spec.parentRefs[0].sectionName`) and in the
//! API's terms (integer, string, list, object), never a Rust type name.
//! `anyOf`/`oneOf` and CEL rules are not evaluated here.
use std::fmt;

use serde_json::Value;

/// What is wrong with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A field the schema does not have, with the closest one it does (if any is close).
    UnknownField { path: String, suggestion: Option<String> },
    /// A field of the wrong type, out of range, or otherwise not allowed.
    Invalid { path: String, message: String },
}

impl Problem {
    pub fn path(&self) -> &str {
        match self {
            Problem::UnknownField { path, .. } | Problem::Invalid { path, .. } => path,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownField { path, suggestion: Some(s) } => write!(f, "unknown field \"{path}\" (did you mean \"{s}\"?)"),
            Problem::UnknownField { path, suggestion: None } => write!(f, "unknown field \"{path}\""),
            Problem::Invalid { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

/// The fields of every object's `metadata` (ObjectMeta), which CRD schemas leave open.
const METADATA_FIELDS: &[&str] = &[
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers", "managedFields",
];

/// Every problem of `value` (a whole object) against `schema` (its openAPIV3Schema).
pub fn check(schema: &Value, value: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    walk(schema, value, &mut String::new(), &mut out);
    if let Some(meta) = value.get("metadata") {
        check_metadata(meta, &mut out);
    }
    out
}

fn check_metadata(meta: &Value, out: &mut Vec<Problem>) {
    let Some(fields) = meta.as_object() else {
        return out.push(Problem::Invalid { path: "metadata".into(), message: format!("must be an object, got {}", describe(meta)) });
    };
    for (key, value) in fields {
        if !METADATA_FIELDS.contains(&key.as_str()) {
            out.push(Problem::UnknownField { path: format!("metadata.{key}"), suggestion: closest(key, METADATA_FIELDS.iter().copied()) });
            continue;
        }
        let must_be_string = matches!(key.as_str(), "name" | "namespace" | "generateName");
        if must_be_string && !value.is_string() && !value.is_null() {
            out.push(Problem::Invalid { path: format!("metadata.{key}"), message: format!("must be a string, got {}", describe(value)) });
        }
        if matches!(key.as_str(), "labels" | "annotations") {
            match value {
                Value::Object(map) => {
                    for (k, v) in map {
                        if !v.is_string() {
                            out.push(Problem::Invalid { path: format!("metadata.{key}.{k}"), message: format!("must be a string (quote it), got {}", describe(v)) });
                        }
                    }
                }
                Value::Null => {}
                other => out.push(Problem::Invalid { path: format!("metadata.{key}"), message: format!("must be a map of strings, got {}", describe(other)) }),
            }
        }
    }
}

fn walk(schema: &Value, value: &Value, path: &mut String, out: &mut Vec<Problem>) {
    // The API server drops nulls of fields that are not nullable: absent, in effect.
    if value.is_null() {
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool).unwrap_or(false);
    if int_or_string {
        if !(value.is_string() || is_integer(value)) {
            invalid(out, path, format!("must be an integer or a string, got {}", describe(value)));
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        if !type_matches(expected, value) {
            return invalid(out, path, format!("must be {}, got {}", a_type(expected, schema.get("format").and_then(Value::as_str)), describe(value)));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list = allowed.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
            invalid(out, path, format!("unsupported value {value} (supported: {list})"));
        }
    }
    match value {
        Value::Number(n) => check_number(schema, n, path, out),
        Value::String(s) => check_string(schema, s, path, out),
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64).filter(|m| len < *m) {
                invalid(out, path, format!("must have at least {min} item{}, has {len}", plural(min)));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64).filter(|m| len > *m) {
                invalid(out, path, format!("may have at most {max} item{}, has {len}", plural(max)));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    let at = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(item_schema, item, path, out);
                    path.truncate(at);
                }
            }
        }
        Value::Object(fields) => check_object(schema, fields, path, out),
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_object(schema: &Value, fields: &serde_json::Map<String, Value>, path: &mut String, out: &mut Vec<Problem>) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool).unwrap_or(false);
    let additional = schema.get("additionalProperties");
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if fields.get(name).is_none_or(Value::is_null) {
                invalid(out, &join(path, name), "is required".into());
            }
        }
    }
    for (key, value) in fields {
        let at = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        match properties.and_then(|p| p.get(key)) {
            // Every object has these; metadata is checked on its own (CRD schemas leave it open).
            _ if at == 0 && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") => {}
            Some(field_schema) => walk(field_schema, value, path, out),
            None => match additional {
                Some(Value::Object(_)) => walk(additional.unwrap(), value, path, out),
                Some(Value::Bool(true)) => {}
                _ if preserve || (properties.is_none() && additional.is_none()) => {}
                _ => {
                    let names = properties.into_iter().flat_map(|p| p.keys().map(String::as_str));
                    out.push(Problem::UnknownField { path: path.clone(), suggestion: closest(key, names) });
                }
            },
        }
        path.truncate(at);
    }
}

fn check_number(schema: &Value, n: &serde_json::Number, path: &str, out: &mut Vec<Problem>) {
    let Some(v) = n.as_f64() else { return };
    let range = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => Some((i32::MIN as f64, i32::MAX as f64, "int32")),
        Some("int64") => Some((i64::MIN as f64, i64::MAX as f64, "int64")),
        _ => None,
    };
    if let Some((lo, hi, name)) = range {
        if v < lo || v > hi {
            return invalid(out, path, format!("{n} does not fit an {name} integer"));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64).filter(|m| v < *m) {
        invalid(out, path, format!("must be at least {}, got {n}", trim_float(min)));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64).filter(|m| v > *m) {
        invalid(out, path, format!("must be at most {}, got {n}", trim_float(max)));
    }
}

fn check_string(schema: &Value, s: &str, path: &str, out: &mut Vec<Problem>) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64).filter(|m| len < *m) {
        invalid(out, path, format!("must be at least {min} character{} long, got {s:?}", plural(min)));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64).filter(|m| len > *m) {
        invalid(out, path, format!("may be at most {max} character{} long, has {len}", plural(max)));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if let Some(re) = super::pattern(pattern) {
            if !re.is_match(s) {
                invalid(out, path, format!("{s:?} does not match the pattern {pattern}"));
            }
        }
    }
}

fn invalid(out: &mut Vec<Problem>, path: &str, message: String) {
    out.push(Problem::Invalid { path: if path.is_empty() { "(the object)".into() } else { path.to_string() }, message });
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

/// "an integer (int32)", "a string", "a list", "an object", "true or false".
fn a_type(expected: &str, format: Option<&str>) -> String {
    match (expected, format) {
        ("integer", Some(f @ ("int32" | "int64"))) => format!("an integer ({f})"),
        ("integer", _) => "an integer".into(),
        ("number", _) => "a number".into(),
        ("string", _) => "a string".into(),
        ("boolean", _) => "true or false".into(),
        ("array", _) => "a list".into(),
        ("object", _) => "an object (a map of fields)".into(),
        (other, _) => format!("of type {other}"),
    }
}

/// A value as an operator would name it: `the string "3"`, `-1`, `a list`.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

/// The name among `known` that `given` most likely meant: the same but for
/// case, or at most two edits away (ignoring case), closest first.
pub fn closest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lower = given.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= if k.len() >= 5 { 2 } else { 1 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "maxLength": 5},
                "sectionName": {"type": "string", "pattern": "^[a-z]+$"},
                "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
                "mode": {"type": "string", "enum": ["Same", "All"]},
                "refs": {"type": "array", "maxItems": 1, "items": {"type": "object", "properties": {"kind": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "targetPort": {"x-kubernetes-int-or-string": true}
            }}
        }})
    }

    fn problems(value: Value) -> Vec<String> {
        check(&schema(), &value).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_misspelt_field_is_named_with_its_path_and_the_field_meant() {
        assert_eq!(problems(json!({"spec": {"name": "a", "sectionNme": "x"}})), ["unknown field \"spec.sectionNme\" (did you mean \"sectionName\"?)"]);
        assert_eq!(problems(json!({"spec": {"name": "a", "refs": [{"knd": "x"}]}})), ["unknown field \"spec.refs[0].knd\" (did you mean \"kind\"?)"]);
        assert_eq!(problems(json!({"spec": {"name": "a", "zzzzzzzz": 1}})), ["unknown field \"spec.zzzzzzzz\""]);
        assert_eq!(problems(json!({"spek": {}})), ["unknown field \"spek\" (did you mean \"spec\"?)"]);
    }

    #[test]
    fn type_and_range_errors_are_in_api_terms_not_rust_types() {
        assert_eq!(problems(json!({"spec": {"name": "a", "port": "3"}})), ["spec.port: must be an integer (int32), got the string \"3\""]);
        assert_eq!(problems(json!({"spec": {"name": "a", "port": -1}})), ["spec.port: must be at least 1, got -1"]);
        assert_eq!(problems(json!({"spec": {"name": "a", "port": 4294967296i64}})), ["spec.port: 4294967296 does not fit an int32 integer"]);
        assert_eq!(problems(json!({"spec": {"name": "a", "mode": "same"}})), ["spec.mode: unsupported value \"same\" (supported: \"Same\", \"All\")"]);
        assert_eq!(problems(json!({"spec": {"name": "toolong"}})), ["spec.name: may be at most 5 characters long, has 7"]);
        assert_eq!(problems(json!({"spec": {"name": "a", "sectionName": "A!"}})), ["spec.sectionName: \"A!\" does not match the pattern ^[a-z]+$"]);
        assert_eq!(problems(json!({"spec": {"name": "a", "refs": [{}, {}]}})), ["spec.refs: may have at most 1 item, has 2"]);
        assert_eq!(problems(json!({"spec": {}})), ["spec.name: is required"]);
    }

    #[test]
    fn open_maps_preserved_fields_int_or_string_and_nulls_pass() {
        assert!(problems(json!({"spec": {"name": "a", "labels": {"x": "y"}, "free": {"any": 1}, "targetPort": "http", "port": null}})).is_empty());
        assert_eq!(problems(json!({"spec": {"name": "a", "labels": {"x": 1}}})), ["spec.labels.x: must be a string, got 1"]);
    }

    #[test]
    fn metadata_fields_are_checked_as_object_meta() {
        assert_eq!(problems(json!({"metadata": {"name": "a", "lables": {}}, "spec": {"name": "a"}})), ["unknown field \"metadata.lables\" (did you mean \"labels\"?)"]);
        assert_eq!(problems(json!({"metadata": {"name": "a", "labels": {"n": 3}}, "spec": {"name": "a"}})), ["metadata.labels.n: must be a string (quote it), got 3"]);
    }

    #[test]
    fn case_differences_suggest_the_right_spelling() {
        assert_eq!(closest("clientCidrs", ["clientCIDRs", "maxConnections"]), Some("clientCIDRs".into()));
        assert_eq!(closest("clientCIDR", ["clientCIDRs", "maxConnections"]), Some("clientCIDRs".into()));
        assert_eq!(closest("to", ["from", "tls"]), None);
    }
}

//! Custom resources: their Rust types are the source of truth; `crds/` is generated from them
//! (`hss-operator crd`) and CI fails when the two differ.

pub mod cluster_scan_policy;
pub mod cluster_scan_task;
pub mod cluster_scan_trigger;
pub mod findings;

pub use cluster_scan_policy::{ClusterScanPolicy, ClusterScanPolicySpec, ClusterScanPolicyStatus};
pub use cluster_scan_task::{
    ClusterScanTask, ClusterScanTaskSpec, ClusterScanTaskStatus, FINALIZER, Phase,
};
pub use cluster_scan_trigger::{
    ClusterScanTrigger, ClusterScanTriggerSpec, ClusterScanTriggerStatus, ConcurrencyPolicy,
    RunReason,
};

use kube::CustomResourceExt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to render the CRD as YAML")]
    Render(#[source] serde_saphyr::SerializeError),
    #[error("failed to render the CRD as JSON")]
    Json(#[source] serde_json::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        "render"
    }
}

/// Every CRD this operator owns, as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, Error> {
    let crds = vec![
        ClusterScanTask::crd(),
        ClusterScanTrigger::crd(),
        ClusterScanPolicy::crd(),
    ];
    let mut out = String::new();
    for crd in &crds {
        let mut value = serde_json::to_value(crd).map_err(Error::Json)?;
        drop_null_from_enums(&mut value);
        kubernetes_formats(&mut value);
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&value).map_err(Error::Render)?);
    }
    Ok(out)
}

/// `Option<enum>` fields come out as `nullable: true` plus a `null` entry in `enum`. API servers
/// before 1.2x reject the `null` entry (with a misleading "per-version schemas" error), and
/// `nullable` already allows it, so the entry is dropped.
fn drop_null_from_enums(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(items)) = map.get_mut("enum") {
                items.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(drop_null_from_enums);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_from_enums),
        _ => {}
    }
}

/// The formats Kubernetes' structural schemas know; the API server and `kubectl explain` warn
/// about any other.
pub const KUBERNETES_FORMATS: [&str; 29] = [
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

/// schemars names Rust's integer types (`uint32`, `uint64`, `int8`, ...), which Kubernetes does
/// not know: each becomes `int32` or `int64`, whichever holds it, with the type's range kept as
/// `minimum`/`maximum` (where the schema has none tighter). Other unknown formats are dropped.
fn kubernetes_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let format = map
                .get("format")
                .and_then(|f| f.as_str())
                .map(str::to_owned);
            if let Some(format) = format
                && !KUBERNETES_FORMATS.contains(&format.as_str())
            {
                let range: Option<(&str, i64, Option<i64>)> = match format.as_str() {
                    "int8" => Some(("int32", i64::from(i8::MIN), Some(i64::from(i8::MAX)))),
                    "int16" => Some(("int32", i64::from(i16::MIN), Some(i64::from(i16::MAX)))),
                    "uint8" => Some(("int32", 0, Some(i64::from(u8::MAX)))),
                    "uint16" => Some(("int32", 0, Some(i64::from(u16::MAX)))),
                    "uint32" => Some(("int64", 0, Some(i64::from(u32::MAX)))),
                    "uint64" | "uint" | "uint128" => Some(("int64", 0, None)),
                    _ => None,
                };
                match range {
                    Some((kube, min, max)) => {
                        map.insert("format".into(), kube.into());
                        map.entry("minimum").or_insert_with(|| min.into());
                        if let Some(max) = max {
                            map.entry("maximum").or_insert_with(|| max.into());
                        }
                    }
                    None => {
                        map.remove("format");
                    }
                }
            }
            map.values_mut().for_each(kubernetes_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(kubernetes_formats),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formats(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(f) = map.get("format").and_then(|f| f.as_str()) {
                    out.push(f.to_string());
                }
                map.values().for_each(|v| formats(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| formats(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_crds_use_only_formats_kubernetes_knows() {
        let yaml = crds_yaml().expect("render");
        let mut seen = Vec::new();
        for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
            let value: serde_json::Value = serde_saphyr::from_str(doc).expect("yaml");
            formats(&value, &mut seen);
        }
        assert!(seen.iter().any(|f| f == "int64"), "integers keep a format");
        let unknown: Vec<&String> = seen
            .iter()
            .filter(|f| !KUBERNETES_FORMATS.contains(&f.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "formats Kubernetes does not know: {unknown:?}"
        );
    }

    #[test]
    fn an_unsigned_integer_keeps_its_range_as_bounds() {
        let mut v = serde_json::json!({
            "properties": {
                "a": {"type": "integer", "format": "uint32", "minimum": 0.0},
                "b": {"type": "integer", "format": "uint16"},
                "c": {"type": "integer", "format": "uint64", "maximum": 10},
                "d": {"type": "string", "format": "date-time"},
            }
        });
        kubernetes_formats(&mut v);
        let p = &v["properties"];
        assert_eq!(
            p["a"],
            serde_json::json!({"type": "integer", "format": "int64", "minimum": 0.0, "maximum": 4_294_967_295_i64})
        );
        assert_eq!(
            p["b"],
            serde_json::json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": 65_535})
        );
        assert_eq!(
            p["c"],
            serde_json::json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 10})
        );
        assert_eq!(p["d"]["format"], "date-time");
    }
}

//! Property tests on hostile input: HSS response decoding, manifest parsing and spec -> request
//! conversion, and the simulator's signature checks never panic, and stay bounded.
//! Bounded in time: a fixed number of cases per property (`PROPTEST_CASES` raises it).

use hss_client::{model::*, signer};
use hss_operator::{crd::ClusterScanTaskSpec, submit::parse_manifest};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "cluster_scan",
            "iac_scan",
            "ready",
            "running",
            "finished",
            "success",
            "failed",
            "scanning",
            "cluster_vul",
            "benchmark",
            "risk_assessment",
            "all_cluster",
            "specific_cluster",
            "dockerfile",
            "k8s_yaml",
            "manual",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(6, 256, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "task_id",
                    "task_type",
                    "task_status",
                    "total_num",
                    "data_list",
                    "cluster_scan_info",
                    "iac_scan_info",
                    "scan_type_list",
                    "cluster_scan_data_list",
                    "iac_scan_data_list",
                    "cluster_id",
                    "scan_status",
                    "scan_detail_list",
                    "scan_type",
                    "status",
                    "failed_reason",
                    "file_id",
                    "start_time",
                    "error_code",
                    "error_msg",
                    "taskType",
                    "clusterScan",
                    "iacScan",
                    "scanTypes",
                    "rangeType",
                    "clusterIds",
                    "fileType",
                    "fileIds",
                    "retryFailedClusters",
                    "x",
                ])
                .prop_map(str::to_string),
                inner,
                0..8,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn decode_all(bytes: &[u8]) {
    let _ = serde_json::from_slice::<CreateTaskResponse>(bytes);
    let _ = serde_json::from_slice::<ListTasksResponse>(bytes);
    let _ = serde_json::from_slice::<ListTaskResourcesResponse>(bytes);
    let _ = serde_json::from_slice::<TaskStatistics>(bytes);
    let _ = serde_json::from_slice::<ListClustersResponse>(bytes);
    let _ = serde_json::from_slice::<ErrorBody>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn response_decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn response_decoders_never_panic_on_hss_shaped_json(value in json_value()) {
        decode_all(&serde_json::to_vec(&value).expect("json"));
        let wrapped = serde_json::json!({"total_num": 1, "data_list": [value.clone()], "cluster_scan_data_list": [value]});
        decode_all(&serde_json::to_vec(&wrapped).expect("json"));
    }

    #[test]
    fn spec_to_request_never_panics_and_accepted_requests_are_valid(value in json_value()) {
        if let Ok(spec) = serde_json::from_value::<ClusterScanTaskSpec>(value)
            && let Ok(req) = spec.to_request()
        {
            prop_assert!(req.validate().is_ok());
            prop_assert!(serde_json::to_vec(&req).expect("serialises").len() < 1 << 20);
        }
    }

    #[test]
    fn manifests_never_panic_the_parser(text in ".{0,300}") {
        let _ = parse_manifest(&text);
        let _ = parse_manifest(&format!("apiVersion: hss.scanops.dev/v1alpha1\nkind: ClusterScanTask\nmetadata: {{name: x}}\nspec: {text}\n"));
    }

    #[test]
    fn hostile_authorization_headers_are_refused_not_panicking(auth in ".{0,200}", date in ".{0,20}") {
        let headers = vec![("Authorization".to_string(), auth), ("X-Sdk-Date".to_string(), date)];
        let result = signer::verify("POST", "/v5/p/common/task", &[], &headers, b"{}", 0, |_| Some(b"sk".to_vec()));
        prop_assert!(result.is_err());
        let _ = signer::decode_query("a=%zz&&=&%%%=1");
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let deep = "[".repeat(100_000);
    decode_all(deep.as_bytes());
    let deep_obj = "{\"a\":".repeat(100_000);
    decode_all(deep_obj.as_bytes());
}

#[test]
fn a_yaml_billion_laughs_manifest_is_refused_bounded() {
    let mut text = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for i in 1..10 {
        let prev = (b'a' + (i - 1) as u8) as char;
        let cur = (b'a' + i as u8) as char;
        text.push_str(&format!("{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    let started = std::time::Instant::now();
    assert!(parse_manifest(&text).is_err());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "alias expansion is bounded"
    );
}

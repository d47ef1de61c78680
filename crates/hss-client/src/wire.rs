//! The wire layout the official Python SDK produces: JSON bodies byte for byte, page queries
//! clamped to what HSS accepts.

use serde::Serialize;

use super::limits::{MAX_OFFSET, MAX_PAGE, MIN_PAGE};

pub(super) fn page_query(offset: u32, limit: u32) -> Vec<(String, String)> {
    vec![
        ("offset".to_string(), offset.min(MAX_OFFSET).to_string()),
        (
            "limit".to_string(),
            limit.clamp(MIN_PAGE, MAX_PAGE).to_string(),
        ),
    ]
}

/// JSON in the Python SDK's layout: `", "` and `": "` separators and `\uXXXX` escapes for
/// every non-ASCII character (simplejson's defaults).
pub fn sdk_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, SdkFormatter);
    // Serialising our own model types into a Vec cannot fail.
    value
        .serialize(&mut ser)
        .expect("model types always serialise");
    out
}

struct SdkFormatter;

impl serde_json::ser::Formatter for SdkFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    #[test]
    fn bodies_are_byte_identical_to_the_python_sdk() {
        // Bytes recorded from huaweicloudsdkhss 3.1.219 (crates/hss-simulator/conformance/sdk_wire_probe.py).
        let req = CreateTaskRequest {
            task_type: TaskType::ClusterScan,
            cluster_scan_info: Some(ClusterScanInfo {
                scan_type_list: vec![
                    ScanType::ClusterVul,
                    ScanType::RiskAssessment,
                    ScanType::Benchmark,
                ],
                range_type: RangeType::SpecificCluster,
                cluster_id_list: Some(vec!["c-1".into(), "c-2".into()]),
            }),
            iac_scan_info: None,
        };
        assert_eq!(
            String::from_utf8(sdk_json(&req)).expect("utf8"),
            r#"{"task_type": "cluster_scan", "cluster_scan_info": {"scan_type_list": ["cluster_vul", "risk_assessment", "benchmark"], "range_type": "specific_cluster", "cluster_id_list": ["c-1", "c-2"]}}"#
        );
        let list = ListTasksRequest {
            task_id: Some("t-1".into()),
            task_name: Some("n".into()),
            start_create_time: Some(1_700_000_000_000),
            end_create_time: Some(1_800_000_000_000),
            trigger_type: Some(TriggerType::Manual),
            task_status: Some(TaskStatus::Finished),
            sort_key: Some("start_time".into()),
            sort_dir: Some("desc".into()),
            cluster_scan_info: Some(ScanTypeFilter {
                scan_type_list: Some(vec![ScanType::Benchmark]),
            }),
            ..ListTasksRequest::for_type(TaskType::ClusterScan)
        };
        assert_eq!(
            String::from_utf8(sdk_json(&list)).expect("utf8"),
            r#"{"task_type": "cluster_scan", "task_id": "t-1", "task_name": "n", "start_create_time": 1700000000000, "end_create_time": 1800000000000, "trigger_type": "manual", "task_status": "finished", "sort_key": "start_time", "sort_dir": "desc", "cluster_scan_info": {"scan_type_list": ["benchmark"]}}"#
        );
    }

    #[test]
    fn non_ascii_is_escaped_like_simplejson() {
        let v = serde_json::json!({"n": "扫描 ü 😀"});
        assert_eq!(
            String::from_utf8(sdk_json(&v)).expect("utf8"),
            r#"{"n": "\u626b\u63cf \u00fc \ud83d\ude00"}"#
        );
    }

    #[test]
    fn page_sizes_are_clamped_to_what_hss_accepts() {
        assert_eq!(page_query(0, 1)[1].1, "10");
        assert_eq!(page_query(0, 1000)[1].1, "200");
        assert_eq!(page_query(u32::MAX, 50)[0].1, MAX_OFFSET.to_string());
    }
}

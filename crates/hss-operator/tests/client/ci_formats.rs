//! `submit --wait -o junit|sarif` end to end: the real binary against the simulator, its
//! documents checked against the published schemas (`tests/fixtures/`) and against the
//! simulator's own rows, and its exit codes against the text output's.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use hss_client::results::{ClusterRisk, RiskLevel, RiskType};
use hss_simulator::{SimConfig, Simulator};
use roxmltree::{Document, Node};
use serde_json::Value;

const CLUSTERS: [&str; 4] = ["cce-f-01", "cce-f-02", "cce-f-03", "cce-f-04"];
/// Scans of this cluster fail in the simulator.
const BAD: &str = "cce-bad";
const SECRET: &str = "SKSIM";

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `hss-operator submit -f MANIFEST [--wait --poll-interval 200ms] EXTRA` against `sim`.
async fn submit(sim: &Simulator, manifest: &str, wait: bool, extra: &[&str]) -> Run {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let path: PathBuf = std::env::temp_dir().join(format!(
        "hss-ci-formats-{}-{}.yaml",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, manifest).expect("write manifest");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hss-operator"));
    cmd.args(["submit", "-f"]).arg(&path);
    if wait {
        cmd.args(["--wait", "--poll-interval", "200ms"]);
    }
    cmd.args([
        "--endpoint",
        &sim.base_url(),
        "--allow-insecure-endpoints",
        "--project-id",
        "proj",
        "--budget-per-minute",
        "0",
    ])
    .args(extra)
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("HUAWEICLOUD_SDK_AK", "AKSIM")
    .env("HUAWEICLOUD_SDK_SK", SECRET)
    .env("NO_COLOR", "1")
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("submit finished within 60 s")
        .expect("submit ran");
    let _ = std::fs::remove_file(&path);
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn simulator(finish_after: Duration) -> Simulator {
    Simulator::start(SimConfig {
        seed: 11,
        fail_clusters: vec![BAD.to_string()],
        finish_after,
        ..SimConfig::default()
    })
    .await
    .expect("simulator")
}

fn cluster_manifest() -> String {
    format!(
        "apiVersion: hss.scanops.dev/v1alpha1\nkind: ClusterScanTask\nmetadata: {{name: ci}}\n\
         spec:\n  taskType: cluster_scan\n  clusterScan:\n    scanTypes: [risk_assessment, benchmark, cluster_vul]\n    \
         rangeType: specific_cluster\n    clusterIds: [{}, {BAD}]\n",
        CLUSTERS.join(", ")
    )
}

fn rank(level: RiskLevel) -> Option<usize> {
    RiskLevel::ALL.iter().position(|l| *l == level)
}

/// The JUnit schema (`tests/fixtures/junit-10.xsd`), read for what it declares: each element's
/// children, text and attributes (required ones, and the patterns of its simple types). Its
/// content models are all "any of these, any number of times", so order is not checked; any
/// construct this reader does not know fails the test, so a changed schema cannot pass
/// unread.
mod xsd {
    use std::collections::{BTreeMap, BTreeSet};

    use roxmltree::{Document, Node};

    #[derive(Debug, Clone, Default)]
    pub struct Decl {
        /// Text content allowed (a simple or mixed type).
        text: bool,
        /// No child elements, no attributes (xs:string).
        simple: bool,
        children: BTreeSet<String>,
        locals: BTreeMap<String, Decl>,
        /// name -> (required, pattern of its type).
        attrs: BTreeMap<String, (bool, Option<regex::Regex>)>,
    }

    pub struct Schema {
        elements: BTreeMap<String, Decl>,
    }

    fn simple() -> Decl {
        Decl {
            text: true,
            simple: true,
            ..Decl::default()
        }
    }

    fn complex(node: Node<'_, '_>, patterns: &BTreeMap<String, regex::Regex>) -> Decl {
        let mut d = Decl {
            text: node.attribute("mixed") == Some("true"),
            ..Decl::default()
        };
        for child in node.children().filter(Node::is_element) {
            match child.tag_name().name() {
                "sequence" | "choice" => {
                    for e in child
                        .descendants()
                        .filter(|n| n.tag_name().name() == "element")
                    {
                        match (e.attribute("ref"), e.attribute("name"), e.attribute("type")) {
                            (Some(r), None, None) => {
                                d.children.insert(r.to_string());
                            }
                            (None, Some(n), Some("xs:string")) => {
                                d.locals.insert(n.to_string(), simple());
                            }
                            other => panic!("unknown content {other:?}"),
                        }
                    }
                    for n in child.descendants().filter(Node::is_element) {
                        let known = ["sequence", "choice", "element"];
                        assert!(known.contains(&n.tag_name().name()), "unknown {n:?}");
                    }
                }
                "attribute" => {
                    let name = child.attribute("name").expect("attribute name");
                    let pattern = match child.attribute("type") {
                        Some("xs:string") => None,
                        Some(t) => Some(
                            patterns
                                .get(t)
                                .unwrap_or_else(|| panic!("unknown type {t}"))
                                .clone(),
                        ),
                        None => panic!("attribute {name} without a type"),
                    };
                    d.attrs.insert(
                        name.to_string(),
                        (child.attribute("use") == Some("required"), pattern),
                    );
                }
                other => panic!("unknown complexType part {other}"),
            }
        }
        d
    }

    impl Schema {
        pub fn parse(text: &str) -> Self {
            let doc = Document::parse(text).expect("the XSD parses");
            let top: Vec<Node<'_, '_>> = doc
                .root_element()
                .children()
                .filter(Node::is_element)
                .collect();
            let mut patterns = BTreeMap::new();
            for t in top.iter().filter(|n| n.tag_name().name() == "simpleType") {
                let r = t
                    .descendants()
                    .find(|n| n.tag_name().name() == "restriction")
                    .expect("a restriction");
                assert_eq!(r.attribute("base"), Some("xs:string"));
                let p = r
                    .children()
                    .find(|n| n.tag_name().name() == "pattern")
                    .and_then(|n| n.attribute("value"))
                    .expect("a pattern");
                // XSD patterns match the whole value.
                let re = regex::Regex::new(&format!("^(?:{p})$")).expect("the pattern compiles");
                patterns.insert(t.attribute("name").expect("name").to_string(), re);
            }
            let mut named = BTreeMap::new();
            for t in top.iter().filter(|n| n.tag_name().name() == "complexType") {
                let d = complex(*t, &patterns);
                named.insert(t.attribute("name").expect("name").to_string(), d);
            }
            let mut elements = BTreeMap::new();
            for e in top.iter().filter(|n| n.tag_name().name() == "element") {
                let name = e.attribute("name").expect("name").to_string();
                let decl = match e.attribute("type") {
                    Some("xs:string") => simple(),
                    Some(t) => named
                        .get(t)
                        .unwrap_or_else(|| panic!("unknown type {t}"))
                        .clone(),
                    None => {
                        let ct = e
                            .children()
                            .find(|n| n.tag_name().name() == "complexType")
                            .expect("an inline complexType");
                        complex(ct, &patterns)
                    }
                };
                elements.insert(name, decl);
            }
            for n in top {
                let kind = n.tag_name().name();
                assert!(
                    ["simpleType", "complexType", "element"].contains(&kind),
                    "unknown {kind}"
                );
            }
            Self { elements }
        }

        /// Every violation of the schema in `xml`, as `path: what`.
        pub fn violations(&self, xml: &str) -> Vec<String> {
            let doc = match Document::parse(xml) {
                Ok(d) => d,
                Err(e) => return vec![format!("not well-formed: {e}")],
            };
            let root = doc.root_element();
            let mut out = Vec::new();
            match self.elements.get(root.tag_name().name()) {
                Some(d) => self.check(root, d, root.tag_name().name(), &mut out),
                None => out.push(format!(
                    "{} is not a global element",
                    root.tag_name().name()
                )),
            }
            out
        }

        fn check(&self, node: Node<'_, '_>, decl: &Decl, path: &str, out: &mut Vec<String>) {
            for a in node.attributes() {
                match decl.attrs.get(a.name()) {
                    None => out.push(format!("{path}: undeclared attribute {}", a.name())),
                    Some((_, Some(re))) if !re.is_match(a.value()) => out.push(format!(
                        "{path}: {}={:?} breaks its pattern",
                        a.name(),
                        a.value()
                    )),
                    Some(_) => {}
                }
            }
            for (name, (required, _)) in &decl.attrs {
                if *required && node.attribute(name.as_str()).is_none() {
                    out.push(format!("{path}: missing required attribute {name}"));
                }
            }
            for child in node.children() {
                if child.is_text() {
                    let text = child.text().unwrap_or_default();
                    if !decl.text && !text.trim().is_empty() {
                        out.push(format!("{path}: text in element-only content: {text:?}"));
                    }
                    continue;
                }
                if !child.is_element() {
                    continue;
                }
                let name = child.tag_name().name();
                let at = format!("{path}/{name}");
                if decl.simple {
                    out.push(format!("{at}: element in a simple type"));
                } else if let Some(local) = decl.locals.get(name) {
                    self.check(child, local, &at, out);
                } else if decl.children.contains(name) {
                    self.check(child, &self.elements[name], &at, out);
                } else {
                    out.push(format!("{at}: not allowed here"));
                }
            }
        }
    }
}

fn junit_schema() -> xsd::Schema {
    xsd::Schema::parse(include_str!("../fixtures/junit-10.xsd"))
}

fn assert_junit(schema: &xsd::Schema, xml: &str, what: &str) {
    let v = schema.violations(xml);
    assert!(v.is_empty(), "{what}: {v:#?}\n{xml}");
}

/// The SARIF 2.1.0 schema, with its one invalid pattern replaced as
/// `tests/fixtures/README.md` says.
fn sarif_schema() -> jsonschema::Validator {
    let text = include_str!("../fixtures/sarif-schema-2.1.0.json").replace(
        r#""^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$""#,
        r#""^[a-zA-Z]{2}(-[a-zA-Z]{2})?$""#,
    );
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

fn assert_sarif(schema: &jsonschema::Validator, log: &Value, what: &str) {
    let errors: Vec<String> = schema
        .iter_errors(log)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}");
}

fn named<'a>(doc: &'a Document<'a>, name: &str) -> Vec<Node<'a, 'a>> {
    doc.descendants().filter(|n| n.has_tag_name(name)).collect()
}

#[test]
fn the_schema_reader_refuses_what_the_junit_schema_refuses() {
    let schema = junit_schema();
    // (document, a violation's words, reason)
    let cases = [
        (
            "<testsuites><testsuite name='s' tests='1' failures='0' errors='0'/></testsuites>",
            None,
            "minimal",
        ),
        (
            "<testsuites><testsuite name='s' tests='1' failures='0'/></testsuites>",
            Some("missing required attribute errors"),
            "required",
        ),
        (
            "<testsuites><testcase name='c'/></testsuites>",
            Some("not allowed here"),
            "a case outside a suite",
        ),
        (
            "<testsuites><testsuite name='s' tests='1' failures='0' errors='0'><testcase name='c' file='x'/></testsuite></testsuites>",
            Some("undeclared attribute file"),
            "testcase has no file attribute",
        ),
        (
            "<testsuites time='1.5.5'/>",
            Some("breaks its pattern"),
            "a time that is no number",
        ),
        (
            "<testsuites>text</testsuites>",
            Some("text in element-only content"),
            "text",
        ),
        ("<report/>", Some("not a global element"), "another root"),
        ("<testsuites>", Some("not well-formed"), "unclosed"),
    ];
    for (xml, words, reason) in cases {
        let v = schema.violations(xml);
        match words {
            None => assert!(v.is_empty(), "{reason}: {v:?}"),
            Some(w) => assert!(v.iter().any(|e| e.contains(w)), "{reason}: {v:?}"),
        }
    }
}

#[tokio::test]
async fn junit_has_a_failure_per_simulator_row_at_or_above_fail_on_and_the_same_exit_code() {
    let sim = simulator(Duration::from_secs(1)).await;
    let schema = junit_schema();
    let manifest = cluster_manifest();
    for fail_on in [None, Some(RiskLevel::High), Some(RiskLevel::Low)] {
        let gate: Vec<&str> = fail_on
            .map(|l| vec!["--fail-on", l.as_str()])
            .unwrap_or_default();
        let mut args = vec!["-o", "junit"];
        args.extend(&gate);

        let run = submit(&sim, &manifest, true, &args).await;
        let text = submit(&sim, &manifest, true, &gate).await;

        // What the simulator holds for the clusters whose scans succeeded.
        let rows: Vec<(RiskType, ClusterRisk)> = RiskType::ALL
            .iter()
            .flat_map(|rt| sim.cluster_risks("proj", *rt).into_iter().map(|r| (*rt, r)))
            .filter(|(_, r)| CLUSTERS.contains(&r.cluster_id.as_str()))
            .collect();
        let at_or_above = |r: &ClusterRisk| {
            rank(r.risk_level).is_some_and(|n| fail_on.and_then(rank).is_none_or(|max| n <= max))
        };
        let failing = rows.iter().filter(|(_, r)| at_or_above(r)).count();
        let expected = match fail_on {
            Some(_) if failing > 0 => 8,
            _ => 6,
        };
        let what = format!("--fail-on {fail_on:?}");
        assert_eq!(run.code, Some(expected), "{what}: {}", run.stderr);
        assert_eq!(
            text.code, run.code,
            "{what}: the format does not change the exit code"
        );
        assert!(failing > 0, "{what}: seed 11 gives these clusters risks");
        assert_junit(&schema, &run.stdout, &what);

        let doc = Document::parse(&run.stdout).expect("parses");
        assert_eq!(
            named(&doc, "testcase").len(),
            5 * 3,
            "{what}: clusters x scan types"
        );
        assert_eq!(named(&doc, "failure").len(), failing, "{what}");
        let errors = named(&doc, "error");
        assert_eq!(errors.len(), 3, "{what}: {BAD}'s three scans");
        assert!(
            errors
                .iter()
                .all(|e| e.attribute("type") == Some("scan_failed"))
        );
        for (rt, r) in rows.iter().filter(|(_, r)| at_or_above(r)) {
            let case = named(&doc, "testcase")
                .into_iter()
                .find(|c| {
                    c.attribute("name")
                        .is_some_and(|n| n.contains(&r.cluster_id))
                        && c.attribute("classname")
                            == Some(&format!("hss.cluster_scan.{}", rt.as_str()))
                })
                .unwrap_or_else(|| panic!("{what}: no case for {}/{}", r.cluster_id, rt.as_str()));
            let name = r.risk_name.as_deref().unwrap_or_default();
            assert!(
                case.children().any(|f| f.has_tag_name("failure")
                    && f.attribute("type") == Some(r.risk_level.as_str())
                    && f.attribute("message").is_some_and(|m| m.contains(name))),
                "{what}: {name} is a failure of its own case"
            );
        }
    }
}

#[tokio::test]
async fn sarif_has_a_result_per_simulator_row_and_validates_against_the_schema() {
    let sim = simulator(Duration::from_secs(1)).await;
    let schema = sarif_schema();

    let run = submit(
        &sim,
        &cluster_manifest(),
        true,
        &["-o", "sarif", "--fail-on", "high"],
    )
    .await;

    assert_eq!(run.code, Some(8), "{}", run.stderr);
    let log: Value = serde_json::from_str(&run.stdout).expect("stdout is one JSON document");
    assert_sarif(&schema, &log, "cluster scan");
    let rows: Vec<ClusterRisk> = RiskType::ALL
        .iter()
        .flat_map(|rt| sim.cluster_risks("proj", *rt))
        .filter(|r| CLUSTERS.contains(&r.cluster_id.as_str()))
        .collect();
    let run0 = &log["runs"][0];
    let results = run0["results"].as_array().expect("results");
    assert_eq!(results.len(), rows.len(), "every row, at every level");
    let rules: BTreeSet<&str> = rows.iter().filter_map(|r| r.risk_id.as_deref()).collect();
    assert_eq!(
        run0["tool"]["driver"]["rules"].as_array().map(Vec::len),
        Some(rules.len()),
        "one rule per risk"
    );
    let mut by_level: BTreeMap<&str, usize> = BTreeMap::new();
    for r in results {
        *by_level
            .entry(r["level"].as_str().unwrap_or("?"))
            .or_default() += 1;
    }
    let count = |levels: &[RiskLevel]| {
        rows.iter()
            .filter(|r| levels.contains(&r.risk_level))
            .count()
    };
    assert_eq!(
        by_level.get("error").copied().unwrap_or(0),
        count(&[RiskLevel::High])
    );
    assert_eq!(
        by_level.get("warning").copied().unwrap_or(0),
        count(&[RiskLevel::Medium])
    );
    assert_eq!(
        by_level.get("note").copied().unwrap_or(0),
        count(&[RiskLevel::Low, RiskLevel::Tips])
    );
    let notes = run0["invocations"][0]["toolExecutionNotifications"]
        .as_array()
        .expect("the failed cluster");
    assert_eq!(notes.len(), 3, "{BAD}'s three scans");
}

#[tokio::test]
async fn iac_results_point_at_the_files_the_manifest_names() {
    let sim = simulator(Duration::from_secs(1)).await;
    let (junit, sarif) = (junit_schema(), sarif_schema());
    // File ids starting with "bad" fail in the simulator.
    let manifest = "apiVersion: hss.scanops.dev/v1alpha1\nkind: ClusterScanTask\nmetadata: {name: iac}\n\
        spec:\n  taskType: iac_scan\n  iacScan:\n    fileType: k8s_yaml\n    \
        fileIds: [app-deploy, web-chart, worker-job, bad-values]\n    \
        filePaths: {app-deploy: deploy/app.yaml, web-chart: charts/web/templates/deploy ment.yaml}\n";

    let run = submit(&sim, manifest, true, &["-o", "sarif"]).await;

    assert_eq!(
        run.code,
        Some(6),
        "a failed file and no gate: {}",
        run.stderr
    );
    let log: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_sarif(&sarif, &log, "iac scan");
    let paths = BTreeMap::from([
        ("app-deploy", Some("deploy/app.yaml")),
        ("web-chart", Some("charts/web/templates/deploy%20ment.yaml")),
        ("worker-job", None),
    ]);
    let results = log["runs"][0]["results"].as_array().expect("results");
    let mut rows = 0;
    for (file, uri) in &paths {
        let want = sim.iac_file_risks("proj", file);
        let got: Vec<&Value> = results
            .iter()
            .filter(|r| r["locations"][0]["logicalLocations"][0]["name"] == *file)
            .collect();
        assert_eq!(got.len(), want.len(), "{file}");
        for r in got {
            let at = &r["locations"][0]["physicalLocation"];
            match uri {
                Some(u) => assert_eq!(at["artifactLocation"]["uri"], *u, "{file}"),
                None => assert!(at.is_null(), "{file}: no path, no physical location"),
            }
        }
        rows += want.len();
    }
    assert!(rows > 0, "seed 11 gives these files risks");
    assert_eq!(results.len(), rows, "nothing of the failed file");

    let run = submit(&sim, manifest, true, &["-o", "junit", "--fail-on", "tips"]).await;
    assert_eq!(run.code, Some(8), "{}", run.stderr);
    assert_junit(&junit, &run.stdout, "iac scan");
    let doc = Document::parse(&run.stdout).expect("parses");
    let names: Vec<&str> = named(&doc, "testcase")
        .iter()
        .filter_map(|c| c.attribute("name"))
        .collect();
    assert!(names.contains(&"deploy/app.yaml (app-deploy)"), "{names:?}");
    assert_eq!(
        named(&doc, "failure").len(),
        rows,
        "every documented level fails at tips"
    );
    assert_eq!(named(&doc, "error").len(), 1, "bad-values");
}

#[tokio::test]
async fn a_wait_that_gives_up_a_rejected_submit_and_a_missing_wait_are_documents_with_an_error() {
    let slow = simulator(Duration::from_secs(3600)).await;
    let (junit, sarif) = (junit_schema(), sarif_schema());
    let manifest = cluster_manifest();

    for format in ["junit", "sarif"] {
        let run = submit(
            &slow,
            &manifest,
            true,
            &["-o", format, "--wait-timeout", "1s"],
        )
        .await;
        assert_eq!(run.code, Some(7), "{format}: {}", run.stderr);
        if format == "junit" {
            assert_junit(&junit, &run.stdout, "timed out");
            let doc = Document::parse(&run.stdout).expect("parses");
            let errors = named(&doc, "error");
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].attribute("type"), Some("wait_timed_out"));
        } else {
            let log: Value = serde_json::from_str(&run.stdout).expect("JSON");
            assert_sarif(&sarif, &log, "timed out");
            assert_eq!(
                log["runs"][0]["invocations"][0]["executionSuccessful"],
                false
            );
        }
    }

    // A manifest a scan cannot follow without --wait: refused before anything is sent.
    let calls = slow.call_count(hss_client::Api::CreateTask, None);
    let run = submit(&slow, &manifest, false, &["-o", "junit"]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--wait"), "{}", run.stderr);
    assert_junit(&junit, &run.stdout, "invalid input");
    assert_eq!(slow.call_count(hss_client::Api::CreateTask, None), calls);

    // HSS refuses the pipeline's key: no task, and the document says so without the secret.
    let mut cmd_args = vec!["-o", "sarif"];
    cmd_args.extend(["--max-attempts", "1"]);
    let wrong = Simulator::start(SimConfig {
        credentials: vec![hss_simulator::Credential::new("AKSIM", "another-secret")],
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let run = submit(&wrong, &manifest, true, &cmd_args).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let log: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_sarif(&sarif, &log, "rejected");
    let note = &log["runs"][0]["invocations"][0]["toolExecutionNotifications"][0];
    assert_eq!(note["descriptor"]["id"], "rejected");
    assert!(!run.stdout.contains(SECRET) && !run.stdout.contains("another-secret"));
}

//! The JUnit XML of a scan: one `<testsuite>` per scan type (`iac_scan` for files), one
//! `<testcase>` per cluster (or file) in it, a `<failure>` per risk that fails the gate. A
//! suite's `failures` and `errors` count test cases, as JUnit's do; each risk is its own
//! `<failure>` element. See [`super`] for the guarantees.

use std::io::{self, Write};

use quick_xml::{
    Writer,
    events::{BytesDecl, BytesText, Event},
};

use super::{Case, Outcome, State, cases, finished, xml_safe};
use crate::{findings::gate::FailOn, submit::Report};
use hss_client::model::TaskType;

type Xml<'w, W> = &'w mut Writer<W>;

/// A test case's counts: (failures, error).
fn counts(case: &Case<'_>, fail_on: Option<FailOn>) -> (usize, bool) {
    match &case.state {
        State::ScanFailed(_) | State::Unread(_) => (0, true),
        State::Read { risks, .. } => (risks.iter().filter(|r| r.fails(fail_on)).count(), false),
    }
}

pub(super) fn write(
    out: &mut impl Write,
    outcome: &Outcome<'_>,
    fail_on: Option<FailOn>,
) -> io::Result<()> {
    let mut w = Writer::new_with_indent(&mut *out, b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    match outcome {
        Outcome::Failed(err) => single(
            &mut w,
            &[],
            "submit",
            err.category(),
            &crate::report_error(*err),
        )?,
        Outcome::Followed { report, .. } if !finished(report) => single(
            &mut w,
            &properties(report, fail_on),
            &format!("task {}", report.task_id),
            "wait_timed_out",
            &format!(
                "gave up waiting for task {}; it is still running in HSS",
                report.task_id
            ),
        )?,
        Outcome::Followed { report, spec } => {
            let all = cases(report, spec);
            let mut suites: Vec<(String, Vec<&Case<'_>>)> = Vec::new();
            for case in &all {
                match suites.iter_mut().find(|(name, _)| *name == case.scan_type) {
                    Some((_, cases)) => cases.push(case),
                    None => suites.push((case.scan_type.clone(), vec![case])),
                }
            }
            let tally = |cases: &[&Case<'_>]| {
                let c: Vec<(usize, bool)> = cases.iter().map(|c| counts(c, fail_on)).collect();
                (
                    cases.len(),
                    c.iter().filter(|(f, e)| *f > 0 && !e).count(),
                    c.iter().filter(|(_, e)| *e).count(),
                )
            };
            let (tests, failures, errors) = tally(&all.iter().collect::<Vec<_>>());
            let props = properties(report, fail_on);
            w.create_element("testsuites")
                .with_attributes([
                    ("name", "hss-operator submit"),
                    ("tests", tests.to_string().as_str()),
                    ("failures", failures.to_string().as_str()),
                    ("errors", errors.to_string().as_str()),
                ])
                .write_inner_content(|w| {
                    for (name, cases) in &suites {
                        let (tests, failures, errors) = tally(cases);
                        w.create_element("testsuite")
                            .with_attributes([
                                ("name", name.as_str()),
                                ("tests", tests.to_string().as_str()),
                                ("failures", failures.to_string().as_str()),
                                ("errors", errors.to_string().as_str()),
                                ("skipped", "0"),
                            ])
                            .write_inner_content(|w| {
                                write_properties(w, &props)?;
                                for case in cases {
                                    write_case(w, report.task_type, case, fail_on)?;
                                }
                                if report.findings.as_ref().is_some_and(|f| f.incomplete) {
                                    text_element(
                                        w,
                                        "system-err",
                                        "the findings are incomplete: HSS held more rows than submit reads",
                                    )?;
                                }
                                Ok(())
                            })?;
                    }
                    Ok(())
                })?;
        }
    }
    drop(w);
    out.write_all(b"\n")
}

/// The task's facts, on every suite.
fn properties(report: &Report, fail_on: Option<FailOn>) -> Vec<(&'static str, String)> {
    let findings = match (&report.findings, report.findings_error) {
        (Some(f), _) if f.incomplete => "incomplete".to_string(),
        (Some(_), _) => "read".to_string(),
        (None, Some(category)) => format!("unreadable: {category}"),
        (None, None) => "not read".to_string(),
    };
    vec![
        ("hss.taskId", report.task_id.clone()),
        ("hss.taskType", report.task_type.as_str().to_string()),
        (
            "hss.failOn",
            fail_on.map_or("every level", FailOn::as_str).to_string(),
        ),
        ("hss.findings", findings),
    ]
}

fn write_properties<W: Write>(w: Xml<'_, W>, props: &[(&str, String)]) -> io::Result<()> {
    if props.is_empty() {
        return Ok(());
    }
    w.create_element("properties").write_inner_content(|w| {
        for (name, value) in props {
            w.create_element("property")
                .with_attributes([("name", *name), ("value", xml_safe(value).as_ref())])
                .write_empty()?;
        }
        Ok(())
    })?;
    Ok(())
}

fn text_element<W: Write>(w: Xml<'_, W>, name: &str, text: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(&xml_safe(text)))?;
    Ok(())
}

/// A document of one suite with one test case that errs: nothing else could be reported.
fn single<W: Write>(
    w: Xml<'_, W>,
    props: &[(&str, String)],
    name: &str,
    kind: &str,
    message: &str,
) -> io::Result<()> {
    w.create_element("testsuites")
        .with_attributes([
            ("name", "hss-operator submit"),
            ("tests", "1"),
            ("failures", "0"),
            ("errors", "1"),
        ])
        .write_inner_content(|w| {
            w.create_element("testsuite")
                .with_attributes([
                    ("name", "submit"),
                    ("tests", "1"),
                    ("failures", "0"),
                    ("errors", "1"),
                    ("skipped", "0"),
                ])
                .write_inner_content(|w| {
                    write_properties(w, props)?;
                    w.create_element("testcase")
                        .with_attributes([
                            ("name", xml_safe(name).as_ref()),
                            ("classname", "hss.submit"),
                        ])
                        .write_inner_content(|w| {
                            w.create_element("error")
                                .with_attributes([
                                    ("type", kind),
                                    ("message", xml_safe(message).as_ref()),
                                ])
                                .write_empty()?;
                            Ok(())
                        })?;
                    Ok(())
                })?;
            Ok(())
        })?;
    Ok(())
}

fn write_case<W: Write>(
    w: Xml<'_, W>,
    task_type: TaskType,
    case: &Case<'_>,
    fail_on: Option<FailOn>,
) -> io::Result<()> {
    let classname = match task_type {
        TaskType::ClusterScan => format!("hss.cluster_scan.{}", case.scan_type),
        TaskType::IacScan => "hss.iac_scan".to_string(),
    };
    let element = w.create_element("testcase").with_attributes([
        ("name", xml_safe(&case.label).as_ref()),
        ("classname", classname.as_str()),
    ]);
    if matches!(&case.state, State::Read { risks, check } if risks.is_empty() && check.is_none()) {
        element.write_empty()?;
        return Ok(());
    }
    element
        .write_inner_content(|w| {
            match &case.state {
                State::ScanFailed(why) => {
                    w.create_element("error")
                        .with_attributes([("type", "scan_failed"), ("message", &xml_safe(why))])
                        .write_empty()?;
                }
                State::Unread(category) => {
                    w.create_element("error")
                        .with_attributes([
                            ("type", "findings_unreadable"),
                            (
                                "message",
                                format!("the findings could not be read ({category})").as_str(),
                            ),
                        ])
                        .write_empty()?;
                }
                State::Read { risks, check } => {
                    let mut below = Vec::new();
                    for r in risks {
                        let line = format!(
                            "{}: {} ({} affected resource(s))",
                            r.level.as_str(),
                            r.name,
                            r.count
                        );
                        if !r.fails(fail_on) {
                            below.push(line);
                            continue;
                        }
                        let mut body = vec![format!("level: {}", r.level.as_str())];
                        let facts = [
                            ("category", r.category.as_deref()),
                            ("risk id", r.risk_id.as_deref()),
                            ("rule", r.rule_id.as_deref()),
                            ("description", r.description.as_deref()),
                            ("remediation", r.remediation.as_deref()),
                        ];
                        body.push(format!("affected resources: {}", r.count));
                        body.extend(
                            facts
                                .iter()
                                .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}"))),
                        );
                        w.create_element("failure")
                            .with_attributes([
                                ("type", r.level.as_str()),
                                ("message", xml_safe(&line).as_ref()),
                            ])
                            .write_text_content(BytesText::new(&xml_safe(&body.join("\n"))))?;
                    }
                    let mut lines = Vec::new();
                    if let Some(c) = check {
                        lines.push(format!(
                            "security check: {} image vulnerabilities, {} risky configurations, {} privileged containers",
                            c.image_vulnerabilities, c.risky_configs, c.privileged_containers
                        ));
                    }
                    if !below.is_empty() {
                        lines.push(format!(
                            "below --fail-on {}, not failures:",
                            fail_on.map_or("", FailOn::as_str)
                        ));
                        lines.extend(below.into_iter().map(|l| format!("  {l}")));
                    }
                    if !lines.is_empty() {
                        text_element(w, "system-out", &lines.join("\n"))?;
                    }
                }
            }
            Ok(())
        })?;
    Ok(())
}

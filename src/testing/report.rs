//! Test results for people (pytest-like), for tools (JSON) and for CI
//! dashboards (JUnit XML).

use super::{CaseResult, Mismatch, Status, TestReport};
use serde_json::{json, Map, Value};
use std::io::{self, Write};

fn show(value: Option<&Value>) -> String {
    match value {
        None => "(absent)".into(),
        Some(v) => v.to_string(),
    }
}

fn mismatch_line(m: &Mismatch) -> String {
    format!(
        "{}: expected {}, got {}",
        m.field,
        show(Some(&m.expected)),
        show(m.actual.as_ref())
    )
}

/// Every failure reason of a case, one per line (tracebacks span several).
fn failure_text(r: &CaseResult) -> Vec<String> {
    r.mismatches
        .iter()
        .map(mismatch_line)
        .chain(r.errors.iter().cloned())
        .collect()
}

/// The pytest-like report: a progress line per detection, then each failing
/// case with the rule, the case name, where it is written and what differed,
/// then `N passed, M failed`.
///
/// # Errors
/// Writing to `out` failed.
pub fn write_human(report: &TestReport, out: &mut dyn Write) -> io::Result<()> {
    for warning in &report.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    let mut rule: Option<&str> = None;
    for r in &report.results {
        if rule != Some(r.case.rule.as_str()) {
            if rule.is_some() {
                writeln!(out)?;
            }
            write!(out, "{} ", r.case.rule)?;
            rule = Some(&r.case.rule);
        }
        let mark = match r.status {
            Status::Passed => ".",
            Status::Failed => "F",
            Status::Skipped => "s",
        };
        write!(out, "{mark}")?;
    }
    if rule.is_some() {
        writeln!(out)?;
    }
    for e in &report.collection_errors {
        writeln!(out, "\nERROR {e}")?;
    }
    for r in report.results.iter().filter(|r| r.status == Status::Failed) {
        writeln!(out, "\nFAILED {} ({})", r.case.id(), r.case.location())?;
        for reason in failure_text(r) {
            for (i, line) in reason.lines().enumerate() {
                let indent = if i == 0 { "    " } else { "      " };
                writeln!(out, "{indent}{line}")?;
            }
        }
    }
    for r in report
        .results
        .iter()
        .filter(|r| r.status == Status::Skipped)
    {
        writeln!(
            out,
            "SKIPPED {}: {}",
            r.case.id(),
            r.case.skip.as_deref().unwrap_or_default()
        )?;
    }
    if report.results.is_empty() && report.collection_errors.is_empty() {
        writeln!(out, "no test cases found")?;
    }
    writeln!(out, "{}", report.summary_line())
}

/// Per-case results keyed by `rule::case`, for tooling.
pub fn json_report(report: &TestReport) -> Value {
    let mut cases = Map::new();
    for r in &report.results {
        cases.insert(
            r.case.id(),
            json!({
                "rule": r.case.rule,
                "case": r.case.name,
                "file": r.case.location(),
                "status": r.status,
                "passed": r.status == Status::Passed,
                "skip_reason": r.case.skip,
                "mismatches": r.mismatches,
                "errors": r.errors,
                "actual": r.actual,
                "seconds": (r.seconds * 1e6).round() / 1e6,
            }),
        );
    }
    json!({
        "passed": report.passed(),
        "failed": report.failed(),
        "skipped": report.skipped(),
        "errors": report.collection_errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "warnings": report.warnings,
        "cases": cases,
    })
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testsuite>` per detection, one `<testcase>` per case.
pub fn junit_xml(report: &TestReport) -> String {
    let mut suites: Vec<(&str, Vec<&CaseResult>)> = Vec::new();
    for r in &report.results {
        match suites.last_mut() {
            Some((rule, cases)) if *rule == r.case.rule => cases.push(r),
            _ => suites.push((&r.case.rule, vec![r])),
        }
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"ravenwatch\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"{}\" time=\"{:.3}\">\n",
        report.results.len(),
        report.failed(),
        report.skipped(),
        report.collection_errors.len(),
        report.seconds
    ));
    for (rule, cases) in &suites {
        let failures = cases.iter().filter(|r| r.status == Status::Failed).count();
        let skipped = cases.iter().filter(|r| r.status == Status::Skipped).count();
        let time: f64 = cases.iter().map(|r| r.seconds).sum();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">\n",
            xml_escape(rule),
            cases.len()
        ));
        for r in cases {
            xml.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
                xml_escape(rule),
                xml_escape(&r.case.name),
                xml_escape(&r.case.location()),
                r.seconds
            ));
            match r.status {
                Status::Passed => xml.push_str("/>\n"),
                Status::Skipped => xml.push_str(&format!(
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                    xml_escape(r.case.skip.as_deref().unwrap_or_default())
                )),
                Status::Failed => {
                    let reasons = failure_text(r);
                    // A mismatch's line, or an exception's last line (`Type: message`).
                    let message = r
                        .mismatches
                        .first()
                        .map(mismatch_line)
                        .or_else(|| {
                            r.errors
                                .first()
                                .and_then(|e| e.lines().last())
                                .map(str::to_string)
                        })
                        .unwrap_or_else(|| "failed".into());
                    xml.push_str(&format!(
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                        xml_escape(&message),
                        xml_escape(&reasons.join("\n"))
                    ));
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    if !report.collection_errors.is_empty() {
        xml.push_str(&format!(
            "  <testsuite name=\"collection\" tests=\"{0}\" errors=\"{0}\">\n",
            report.collection_errors.len()
        ));
        for (i, e) in report.collection_errors.iter().enumerate() {
            xml.push_str(&format!(
                "    <testcase classname=\"collection\" name=\"error {}\">\n      <error message=\"{}\"/>\n    </testcase>\n",
                i + 1,
                xml_escape(&e.to_string())
            ));
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_control_characters() {
        assert_eq!(
            xml_escape("a<b & \"c\"\u{1}\n"),
            "a&lt;b &amp; &quot;c&quot;\n"
        );
    }
}

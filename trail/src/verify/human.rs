//! The human summary: one block per agent, problems in capitals, one
//! verdict line at the end.

use std::fmt::Write as _;

use super::report::{AgentReport, Listed, Ranges, Report, Verdict};

/// Renders `report` for a terminal.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "read {} file(s), {} line(s) ({} blank)",
        report.files, report.lines, report.blank_lines
    );
    listed(&mut out, "", "UNPARSABLE LINES", &report.unparsable, |l| {
        format!("{}:{}: {}", l.file, l.line, l.error)
    });
    listed(
        &mut out,
        "",
        "partial last lines skipped (--live: still being written)",
        &report.partial_lines,
        |l| format!("{}:{}: {}", l.file, l.line, l.error),
    );
    if report.agents.is_empty() {
        out.push_str("no records found\n");
    }
    for agent in &report.agents {
        render_agent(&mut out, agent, report.live);
    }
    let _ = writeln!(
        out,
        "verdict: {} (exit {})",
        word(report.verdict).to_uppercase(),
        report.exit_code
    );
    out
}

fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Intact => "intact",
        Verdict::Incomplete => "incomplete",
        Verdict::Tampered => "tampered",
    }
}

fn render_agent(out: &mut String, a: &AgentReport, live: bool) {
    let _ = writeln!(out, "agent {}: {}", a.agent_id, word(a.verdict));
    let _ = write!(
        out,
        "  sequences {}..{}: {} record(s) in {} line(s)",
        a.first_sequence, a.last_sequence, a.records, a.lines
    );
    if a.identical_duplicates > 0 {
        let _ = write!(
            out,
            " ({} identical duplicate(s), benign)",
            a.identical_duplicates
        );
    }
    out.push('\n');
    let c = &a.checkpoints;
    let _ = write!(out, "  checkpoints: {} ({} valid)", c.total, c.valid);
    match a.latest_valid_checkpoint {
        Some(s) => {
            let _ = writeln!(out, "; latest valid at {s}");
        }
        None => out.push_str("; none valid\n"),
    }
    if !a.open_end {
        out.push_str("  ends with a final checkpoint\n");
    } else if live {
        let _ = writeln!(out, "  open end at {} (--live)", a.last_sequence);
    } else {
        let _ = writeln!(
            out,
            "  OPEN END: the latest record ({}) is not a final checkpoint (truncated, or the agent is still running: --live)",
            a.last_sequence
        );
    }
    ranges(
        out,
        "missing, declared lost by a gap record (restart or spool)",
        &a.missing_declared,
    );
    ranges(out, "MISSING, UNDECLARED", &a.missing_undeclared);
    listed(out, "  ", "NOT LINKED", &a.not_linked, |r| {
        format!("{} at {}:{}: {}", r.sequence, r.file, r.line, r.detail)
    });
    listed(
        out,
        "  ",
        "DIFFERING DUPLICATES",
        &a.differing_duplicates,
        |d| {
            let copies: Vec<String> = d
                .copies
                .iter()
                .map(|c| format!("{}:{} (hash {}…)", c.file, c.line, &c.hash[..12]))
                .collect();
            format!("{}: {}", d.sequence, copies.join(", "))
        },
    );
    for (title, list) in [
        ("INVALID CHECKPOINTS", &c.invalid),
        ("UNTRUSTED CHECKPOINTS", &c.untrusted),
    ] {
        listed(out, "  ", title, list, |i| {
            format!(
                "{} at {}:{}: {}: {}",
                i.sequence, i.file, i.line, i.status, i.detail
            )
        });
    }
    ranges(out, "NOT COVERED BY A VALID CHECKPOINT", &a.uncovered);
    ranges(
        out,
        "pending (after the latest valid checkpoint)",
        &a.pending,
    );
    listed(out, "  ", "INVALID GAP RECORDS", &a.invalid_gaps, |r| {
        format!("{} at {}:{}: {}", r.sequence, r.file, r.line, r.detail)
    });
    if !a.declared_losses.is_empty() {
        let losses: Vec<String> = a
            .declared_losses
            .iter()
            .map(|l| {
                format!(
                    "{}/{} {} ({} gap record(s))",
                    l.source, l.reason, l.count, l.records
                )
            })
            .collect();
        let _ = writeln!(out, "  declared losses: {}", losses.join(", "));
    }
}

fn ranges(out: &mut String, title: &str, r: &Ranges) {
    if r.is_empty() {
        return;
    }
    let shown: Vec<String> = r
        .ranges
        .iter()
        .map(|&[a, b]| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect();
    let _ = write!(
        out,
        "  {title}: {} record(s): {}",
        r.count,
        shown.join(", ")
    );
    let more = r.range_count - r.ranges.len() as u64;
    if more > 0 {
        let _ = write!(out, " and {more} more range(s)");
    }
    out.push('\n');
}

fn listed<T>(
    out: &mut String,
    indent: &str,
    title: &str,
    l: &Listed<T>,
    line: impl Fn(&T) -> String,
) {
    if l.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{title} ({}):", l.count);
    for item in &l.items {
        let _ = writeln!(out, "{indent}  {}", line(item));
    }
    let more = l.count - l.items.len() as u64;
    if more > 0 {
        let _ = writeln!(out, "{indent}  ... and {more} more");
    }
}

//! Samples of the Prometheus text exposition format, as the tests and the
//! bench read the daemon's `/metrics`: one family's label sets and values.
//!
//! A label set is written `k=v,k=v` (values unquoted and unescaped, in the
//! order the exposition has them; `""` for none), so a test can look one up
//! as `samples(m, "tcpstate_sockets")["state=LISTEN"]`.

use std::collections::BTreeMap;

/// Samples of the family `name`: label set -> value. Comments, other
/// families (also those whose name starts with this one) and lines that do
/// not parse are left out.
pub fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_line)
        .filter(|(family, _, _)| *family == name)
        .map(|(_, labels, value)| (labels, value))
        .collect()
}

/// The sum over every sample of `name` whose label set contains `filter`
/// (`""` for all); 0 when there is none.
pub fn sum_where(text: &str, name: &str, filter: &str) -> f64 {
    samples(text, name)
        .iter()
        .filter(|(labels, _)| labels.contains(filter))
        .map(|(_, v)| v)
        .sum()
}

/// The sum over every sample of `name`, or None when the family is absent
/// (a renamed metric must not read as zero).
pub fn total(text: &str, name: &str) -> Option<f64> {
    let samples = samples(text, name);
    (!samples.is_empty()).then(|| samples.values().sum())
}

/// The value of the sample of `name` whose labels include `label="value"`.
pub fn labelled(text: &str, name: &str, label: &str, value: &str) -> Option<f64> {
    let wanted = format!("{label}={value}");
    samples(text, name)
        .into_iter()
        .find(|(labels, _)| labels.split(',').any(|l| l == wanted))
        .map(|(_, v)| v)
}

/// `name{labels} value [timestamp]` as (name, label set, value).
fn parse_line(line: &str) -> Option<(&str, String, f64)> {
    let line = line.trim();
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (set, after) = parse_labels(inner)?;
        labels = set;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels.join(","), value))
}

/// The labels after a `{`, up to its `}`, and what follows it.
fn parse_labels(mut s: &str) -> Option<(Vec<String>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = s.split_once('=')?;
        let mut value = String::new();
        let mut chars = after.trim_start().strip_prefix('"')?.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push(format!("{}={value}", key.trim()));
        s = &after.trim_start()[1 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP tcpstate_events_total x\n\
        # TYPE tcpstate_events_total counter\n\
        tcpstate_events_total 12\n\
        tcpstate_events_lost_total{reason=\"ring_buffer_full\"} 3\n\
        tcpstate_events_lost_total{reason=\"not_run\"} 1\n\
        tcpstate_sockets{state=\"ESTABLISHED\",netns=\"4026531840\"} 7\n\
        tcpstate_sockets{state=\"LISTEN\"} 2\n\
        tcpstate_close_wait_leaked_sockets{comm=\"a \\\"b\\\" c}\"} 1 1700000000000\n\
        tcpstate_state_duration_seconds_bucket{state=\"TIME_WAIT\",le=\"+Inf\"} 5\n";

    #[test]
    fn label_sets_values_and_sums() {
        let sockets = samples(TEXT, "tcpstate_sockets");
        assert_eq!(sockets["state=ESTABLISHED,netns=4026531840"], 7.0);
        assert_eq!(sockets["state=LISTEN"], 2.0);
        assert_eq!(samples(TEXT, "tcpstate_events_total")[""], 12.0);
        assert_eq!(
            samples(TEXT, "tcpstate_close_wait_leaked_sockets")["comm=a \"b\" c}"],
            1.0
        );
        assert_eq!(
            samples(TEXT, "tcpstate_state_duration_seconds_bucket")["state=TIME_WAIT,le=+Inf"],
            5.0
        );
        // A family is not every family its name is the start of.
        assert_eq!(samples(TEXT, "tcpstate_events").len(), 0);
        assert_eq!(total(TEXT, "tcpstate_events_lost_total"), Some(4.0));
        assert_eq!(total(TEXT, "tcpstate_missing"), None);
        assert_eq!(
            sum_where(TEXT, "tcpstate_events_lost_total", "ring_buffer"),
            3.0
        );
        assert_eq!(sum_where(TEXT, "tcpstate_missing", ""), 0.0);
        assert_eq!(
            labelled(TEXT, "tcpstate_sockets", "state", "ESTABLISHED"),
            Some(7.0)
        );
        assert_eq!(labelled(TEXT, "tcpstate_sockets", "state", "CLOSED"), None);
    }

    #[test]
    fn lines_that_do_not_parse_are_left_out() {
        for line in ["x{a=\"1\" 2", "x{a=1} 2", "x{a=\"1\"}", "x 1e", "x{a=\"1"] {
            assert_eq!(parse_line(line), None, "{line}");
        }
    }
}

//! Just enough HTTP/1.1 to talk to the daemon (GET, `Connection: close`)
//! and just enough of the Prometheus text format to read its counters. A
//! crate would add nothing to what the bench measures.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, bail};

pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One GET on a new connection, read to the end.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::with_capacity(64 * 1024);
    stream.read_to_end(&mut raw)?;
    parse(&raw).with_context(|| format!("GET http://{addr}{path}"))
}

fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line in the response")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8(body).context("the response body is not UTF-8")?,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk header")?;
        let size = std::str::from_utf8(&data[..eol])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Samples of one metric family in Prometheus text: label set -> value
/// (the label set as written between the braces, "" when there is none).
pub fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            let Some((labels, value)) = rest.split_once('}') else {
                continue;
            };
            (labels, value)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            // Another family with this one's name as a prefix.
            continue;
        };
        if let Some(v) = value.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.insert(labels.to_owned(), v);
        }
    }
    out
}

/// The sum over every label set of a family; an error if it is absent (a
/// renamed metric must fail the bench, not read as zero).
pub fn sum(text: &str, name: &str) -> anyhow::Result<f64> {
    let samples = samples(text, name);
    if samples.is_empty() {
        bail!("the daemon's /metrics has no `{name}`");
    }
    Ok(samples.values().sum())
}

/// The value of the sample whose labels include `label="value"`.
pub fn labelled(text: &str, name: &str, label: &str, value: &str) -> Option<f64> {
    let wanted = format!("{label}=\"{value}\"");
    samples(text, name)
        .into_iter()
        .find(|(labels, _)| labels.split(',').any(|l| l == wanted))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP tcpstate_events_total x\n\
        tcpstate_events_total 12\n\
        tcpstate_events_lost_total{reason=\"ring_buffer_full\"} 3\n\
        tcpstate_events_lost_total{reason=\"not_run\"} 1\n\
        tcpstate_sockets{state=\"ESTABLISHED\"} 7\n\
        tcpstate_sockets{state=\"LISTEN\"} 2\n";

    #[test]
    fn sums_and_labels() {
        assert_eq!(sum(TEXT, "tcpstate_events_total").ok(), Some(12.0));
        assert_eq!(sum(TEXT, "tcpstate_events_lost_total").ok(), Some(4.0));
        assert!(sum(TEXT, "tcpstate_missing").is_err());
        assert_eq!(
            labelled(TEXT, "tcpstate_sockets", "state", "ESTABLISHED"),
            Some(7.0)
        );
    }

    #[test]
    fn chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse(raw).expect("parses");
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
    }
}

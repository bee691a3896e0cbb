//! Just enough HTTP/1.1 to talk to the daemon and to a Prometheus server:
//! GET and friends on a keep-alive connection ([`Http`], so that scraping
//! does not itself open and close connections that would change the counts
//! being checked), or one request on a new connection ([`get`],
//! [`get_within`]). Bodies by `Content-Length`, chunked, or up to the end of
//! the stream. A crate would add nothing to what the tests and the bench
//! measure, and this one cannot be confused with the server's own stack.

use std::{
    io::{self, BufRead, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// How long a plain [`Http::connect`] waits for an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, values trimmed, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 connection: one socket for every request.
pub struct Http {
    stream: BufReader<TcpStream>,
    host: String,
    /// Ask the server to close after each answer (`Connection: close`).
    close: bool,
}

impl Http {
    /// Connects, or panics: for tests.
    pub fn connect(addr: SocketAddr) -> Http {
        Http::try_connect(addr).expect("connect to the HTTP server")
    }

    /// Connects with a 10 s read timeout.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Http> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(Http::over(stream, addr))
    }

    /// Connects within `timeout`, which also bounds each read and write.
    pub fn connect_within(addr: SocketAddr, timeout: Duration) -> io::Result<Http> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Http::over(stream, addr))
    }

    fn over(stream: TcpStream, addr: SocketAddr) -> Http {
        Http {
            stream: BufReader::new(stream),
            host: addr.to_string(),
            close: false,
        }
    }

    /// GET `path`, or panics: for tests.
    pub fn get(&mut self, path: &str) -> Response {
        self.send("GET", path).expect("HTTP request")
    }

    /// One request and its whole answer.
    pub fn send(&mut self, method: &str, path: &str) -> io::Result<Response> {
        let connection = if self.close {
            "Connection: close\r\n"
        } else {
            ""
        };
        write!(
            self.stream.get_mut(),
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{connection}\r\n",
            self.host
        )?;
        read_response(&mut self.stream, method)
    }
}

/// One request on a new connection (10 s read timeout).
pub fn request(addr: SocketAddr, method: &str, path: &str) -> io::Result<Response> {
    Http::try_connect(addr)?.send(method, path)
}

/// One GET on a new connection (10 s read timeout).
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    request(addr, "GET", path)
}

/// One GET on a new connection with `Connection: close`, as a Prometheus
/// without keep-alive scrapes; `timeout` bounds connecting, each read and
/// each write.
pub fn get_within(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    let mut http = Http::connect_within(addr, timeout)?;
    http.close = true;
    http.send("GET", path)
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads one response (status line, headers, body) from `reader`.
pub fn read_response(reader: &mut impl BufRead, method: &str) -> io::Result<Response> {
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("the headers did not end".to_owned()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut response = Response {
        status,
        headers,
        body: String::new(),
    };
    let no_body = method == "HEAD" || status == 204 || status == 304 || status < 200;
    let body = if no_body {
        Vec::new()
    } else if response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(reader)?
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        body
    };
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

/// A chunked body, up to its last (empty) chunk and the trailer's end.
fn dechunk(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailer fields, if any, up to an empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(out);
                }
            }
        }
        let start = out.len();
        out.resize(start + size, 0);
        reader.read_exact(&mut out[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], method: &str) -> Response {
        read_response(&mut &raw[..], method).expect("parses")
    }

    #[test]
    fn bodies_by_length_chunks_or_end_of_stream() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabcdef",
            "GET",
        );
        assert_eq!((r.status, r.body.as_str()), (200, "abc"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        let r = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            "GET",
        );
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
        let r = parse(b"HTTP/1.0 404 Not Found\r\n\r\nnope", "GET");
        assert_eq!((r.status, r.body.as_str()), (404, "nope"));
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD");
        assert_eq!((r.status, r.body.as_str()), (200, ""));
    }

    #[test]
    fn a_broken_answer_is_an_error() {
        assert!(read_response(&mut &b"garbage\r\n\r\n"[..], "GET").is_err());
        assert!(read_response(&mut &b"HTTP/1.1 200 OK\r\nContent-Len"[..], "GET").is_err());
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(read_response(&mut &short[..], "GET").is_err());
    }
}

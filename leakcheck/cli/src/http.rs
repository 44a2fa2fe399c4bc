//! A minimal HTTP/1.1 client for `leakcheck snapshot`: one GET over a std
//! `TcpStream`, plain `http://` only, bounded in time and in size.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest response accepted: a snapshot document plus room for headers.
pub const MAX_RESPONSE_BYTES: usize = crate::document::MAX_DOCUMENT_BYTES as usize + 64 * 1024;

/// The path asked for when the URL names none.
pub const DEBUG_TASKS_PATH: &str = "/debug/tasks";

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port, 80 when the URL names none.
    pub port: u16,
    /// Path and query; [`DEBUG_TASKS_PATH`] when the URL names none.
    pub path: String,
}

impl HttpUrl {
    /// Parses a URL; errors are sentence fragments.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err("https is not supported: fetch the snapshot over plain http (e.g. from 127.0.0.1)".to_owned());
            }
            _ => return Err("expected a URL like http://127.0.0.1:8080/debug/tasks".to_owned()),
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() || path == "/" {
            DEBUG_TASKS_PATH
        } else {
            path
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".to_owned());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or("unclosed '[' in the host")?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("the URL names no host".to_owned());
        }
        let port = match port {
            None => 80,
            Some(port) => port.parse().map_err(|_| format!("invalid port {port:?}"))?,
        };
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// GETs the URL and returns the body of a `200` answer. The whole exchange
/// (connect, send, receive) must finish within `timeout`.
pub fn get(url: &HttpUrl, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(url, timeout)?;
    let host_header = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\nUser-Agent: leakcheck/{}\r\nConnection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION")
    );
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| format!("cannot set a timeout: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;

    let mut received = Vec::new();
    let mut head: Option<Head> = None;
    let mut chunk = vec![0; 64 * 1024];
    loop {
        if let Some(body) = head
            .as_ref()
            .map(|h| h.complete_body(&received))
            .transpose()?
            .flatten()
        {
            return Ok(body);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "no complete answer within {} ms",
                timeout.as_millis()
            ));
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| format!("cannot set a timeout: {e}"))?;
        let read = match stream.read(&mut chunk) {
            Ok(read) => read,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "no complete answer within {} ms",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("connection failed while reading: {e}")),
        };
        if read == 0 {
            let head = head.ok_or("the server closed the connection before answering")?;
            return head.body_at_close(&received);
        }
        received.extend_from_slice(&chunk[..read]);
        if received.len() > MAX_RESPONSE_BYTES {
            return Err(format!(
                "answer larger than the {} MiB limit",
                MAX_RESPONSE_BYTES >> 20
            ));
        }
        let head_end = if head.is_none() {
            find(&received, b"\r\n\r\n")
        } else {
            None
        };
        if let Some(end) = head_end {
            head = Some(Head::parse(&received[..end])?);
            received.drain(..end + 4);
        }
    }
}

fn connect(url: &HttpUrl, timeout: Duration) -> Result<TcpStream, String> {
    let addresses = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?;
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                last_error = Some(format!(
                    "cannot connect to {address}: {e} (is the server running?)"
                ))
            }
        }
    }
    Err(last_error.unwrap_or_else(|| format!("{} resolves to no address", url.host)))
}

/// How the body of the answer is delimited.
#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
struct Head {
    framing: Framing,
}

impl Head {
    fn parse(head: &[u8]) -> Result<Head, String> {
        let head = String::from_utf8_lossy(head);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let (version, status) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if !version.starts_with("HTTP/1.") {
            return Err(format!("not an HTTP/1.x answer: {status_line:?}"));
        }
        if status != "200" {
            return Err(format!(
                "the server answered {:?}, expected 200 (is this the server's {DEBUG_TASKS_PATH}?)",
                status_line
            ));
        }
        let mut framing = Framing::UntilClose;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                framing = Framing::Chunked;
            } else if name.eq_ignore_ascii_case("content-length")
                && !matches!(framing, Framing::Chunked)
            {
                framing = Framing::Length(
                    value
                        .parse()
                        .map_err(|_| format!("invalid Content-Length {value:?}"))?,
                );
            }
        }
        Ok(Head { framing })
    }

    /// The body if `received` holds all of it.
    fn complete_body(&self, received: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self.framing {
            Framing::Length(length) if received.len() >= length => {
                Ok(Some(received[..length].to_vec()))
            }
            // Only try to decode once the terminating chunk may be there.
            Framing::Chunked if received.ends_with(b"0\r\n\r\n") => decode_chunked(received),
            _ => Ok(None),
        }
    }

    fn body_at_close(&self, received: &[u8]) -> Result<Vec<u8>, String> {
        match self.framing {
            Framing::UntilClose => Ok(received.to_vec()),
            Framing::Length(length) => Err(format!(
                "the server closed the connection after {} of {length} body bytes",
                received.len()
            )),
            Framing::Chunked => decode_chunked(received)?.ok_or_else(|| {
                "the server closed the connection in the middle of a chunked body".to_owned()
            }),
        }
    }
}

/// Decodes a chunked body; `None` when it is incomplete.
fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("invalid chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_default_to_port_80_and_the_debug_tasks_path() {
        let url = HttpUrl::parse("http://localhost").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("localhost", 80, DEBUG_TASKS_PATH)
        );
        let url = HttpUrl::parse("http://[::1]:9000/debug/tasks?x=1").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("::1", 9000, "/debug/tasks?x=1")
        );
    }

    #[test]
    fn urls_without_http_are_refused_with_a_reason() {
        assert!(
            HttpUrl::parse("https://127.0.0.1/")
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!(
            HttpUrl::parse("127.0.0.1:8080")
                .unwrap_err()
                .contains("expected a URL")
        );
        assert!(
            HttpUrl::parse("http://127.0.0.1:http/")
                .unwrap_err()
                .contains("invalid port")
        );
    }

    #[test]
    fn chunked_bodies_decode_and_report_incompleteness() {
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
                .unwrap()
                .unwrap(),
            b"abcde"
        );
        assert_eq!(decode_chunked(b"3\r\nab").unwrap(), None);
        assert!(decode_chunked(b"zz\r\n").is_err());
    }
}

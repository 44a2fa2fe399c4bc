//! A minimal HTTP/1.1 client over raw sockets: exact control over what is sent and when a request is abandoned.
//!
//! The fault clients need to stop half-way through a request or a response, which a full client
//! library hides; the probes use the same code so every byte on the wire is ours.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted before the server is declared broken.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest response body read into memory (a `/debug/tasks` snapshot of a leaky run is a few MB).
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header names lower-cased, in wire order.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .and_then(|value| value.trim().parse().ok())
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The head.
    pub head: ResponseHead,
    /// The decoded body (chunked encoding removed).
    pub body: Vec<u8>,
}

/// Bytes of a `GET path` request with `Connection: close` and the extra headers.
pub fn get_request(path: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    get_request_head(path, &[&[("Connection", "close")], extra_headers].concat())
}

/// Bytes of a `GET path` request that leaves the connection open afterwards (HTTP/1.1's
/// default), with the extra headers.
pub fn keep_alive_get_request(path: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    get_request_head(path, extra_headers)
}

fn get_request_head(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// `GET path` on a fresh connection, the whole exchange bounded by `deadline`.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    extra_headers: &[(&str, &str)],
    deadline: Duration,
) -> io::Result<Response> {
    let exchange_on_a_new_connection = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        exchange(&mut stream, &get_request(path, extra_headers)).await
    };
    tokio::time::timeout(deadline, exchange_on_a_new_connection)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("GET {path} timed out")))?
}

/// Writes `request` to `stream` (plain TCP or TLS) and reads the response to it.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> io::Result<Response> {
    stream.write_all(request).await?;
    let mut buffered = Vec::new();
    let head = read_head(stream, &mut buffered).await?;
    let body = read_body(stream, &head, buffered).await?;
    Ok(Response { head, body })
}

/// Reads until the end of the response head; bytes past it stay in `buffered`.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffered: &mut Vec<u8>,
) -> io::Result<ResponseHead> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buffered, b"\r\n\r\n") {
            let head = parse_head(&buffered[..end])?;
            buffered.drain(..end + 4);
            return Ok(head);
        }
        if buffered.len() > MAX_HEAD_BYTES {
            return Err(invalid("response head larger than 64 KiB"));
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head ended",
            ));
        }
        buffered.extend_from_slice(&chunk[..read]);
    }
}

/// Reads the body that follows `head`, starting with the bytes already `buffered`.
pub async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    head: &ResponseHead,
    mut buffered: Vec<u8>,
) -> io::Result<Vec<u8>> {
    if head.is_chunked() {
        return read_chunked(stream, buffered).await;
    }
    match head.content_length() {
        Some(length) => {
            if length > MAX_BODY_BYTES {
                return Err(invalid("content-length above the body limit"));
            }
            while buffered.len() < length {
                fill(stream, &mut buffered).await?;
            }
            buffered.truncate(length);
            Ok(buffered)
        }
        None => {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    return Ok(buffered);
                }
                buffered.extend_from_slice(&chunk[..read]);
                if buffered.len() > MAX_BODY_BYTES {
                    return Err(invalid("body above the limit"));
                }
            }
        }
    }
}

async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buffered: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(&buffered, b"\r\n") {
                break end;
            }
            fill(stream, &mut buffered).await?;
        };
        let size_text = std::str::from_utf8(&buffered[..line_end])
            .map_err(|_| invalid("chunk size is not text"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid("chunk size is not hexadecimal"))?;
        buffered.drain(..line_end + 2);
        if size == 0 {
            return Ok(body);
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(invalid("chunked body above the limit"));
        }
        while buffered.len() < size + 2 {
            fill(stream, &mut buffered).await?;
        }
        body.extend_from_slice(&buffered[..size]);
        buffered.drain(..size + 2);
    }
}

async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buffered: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside the body",
        ));
    }
    buffered.extend_from_slice(&chunk[..read]);
    Ok(())
}

fn parse_head(bytes: &[u8]) -> io::Result<ResponseHead> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("response does not start with HTTP/1.x"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("response status code is not a number"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(ResponseHead { status, headers })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_chunked_and_content_length_bodies() {
        let chunked: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Request-Id: a\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let mut reader = chunked;
        let mut buffered = Vec::new();
        let head = read_head(&mut reader, &mut buffered).await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("x-request-id"), Some("a"));
        let body = read_body(&mut reader, &head, buffered).await.unwrap();
        assert_eq!(body, b"abcde");

        let sized: &[u8] =
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusyEXTRA";
        let mut reader = sized;
        let mut buffered = Vec::new();
        let head = read_head(&mut reader, &mut buffered).await.unwrap();
        assert_eq!(head.status, 503);
        assert_eq!(
            read_body(&mut reader, &head, buffered).await.unwrap(),
            b"busy"
        );
    }

    #[test]
    fn requests_close_the_connection_unless_kept_alive() {
        assert_eq!(
            get_request("/a", &[("x-request-id", "r")]),
            b"GET /a HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nx-request-id: r\r\n\r\n"
        );
        assert_eq!(
            keep_alive_get_request("/a", &[]),
            b"GET /a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn rejects_a_head_that_is_not_http() {
        let mut reader: &[u8] = b"SSH-2.0-OpenSSH\r\n\r\n";
        let error = read_head(&mut reader, &mut Vec::new()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_truncated_head_is_an_eof_error() {
        let mut reader: &[u8] = b"HTTP/1.1 200 OK\r\nContent-";
        let error = read_head(&mut reader, &mut Vec::new()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}

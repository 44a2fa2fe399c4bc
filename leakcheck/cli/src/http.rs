//! Fetching a running service's `/debug/tasks` over http or https (ureq with
//! rustls), bounded in time and size, with an optional bearer token and CA
//! file; used by `leakcheck snapshot` and `leakcheck watch`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ureq::Agent;
use ureq::http::Uri;
use ureq::tls::{PemItem, RootCerts, TlsConfig};

use crate::error::CliError;

/// Largest answer accepted: a snapshot document.
pub const MAX_RESPONSE_BYTES: u64 = crate::document::MAX_DOCUMENT_BYTES;

/// The path asked for when the URL names none.
pub const DEBUG_TASKS_PATH: &str = "/debug/tasks";

/// Longest `--timeout` accepted: past an hour a stuck server is not going to answer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How to reach the service.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The whole exchange (resolve, connect, TLS, request, body) must finish within this.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// File of the certificates to trust for https instead of the built-in
    /// web roots (a self-signed or internal CA): PEM, or one DER certificate.
    pub ca_cert: Option<PathBuf>,
}

/// A client for one URL; every request opens a fresh connection.
#[derive(Debug)]
pub struct Client {
    agent: Agent,
    url: String,
    authorization: Option<String>,
    timeout: Duration,
}

impl Client {
    /// Checks the URL and options; the errors name the URL or the file.
    pub fn new(url: &str, options: &ClientOptions) -> Result<Client, CliError> {
        let full_url = with_default_path(url)
            .map_err(|problem| CliError::Usage(format!("{url}: {problem}")))?;
        if options.timeout.is_zero() || options.timeout > MAX_TIMEOUT {
            return Err(CliError::Usage(format!(
                "--timeout {:?} is out of range: give a duration between 1ms and {} s",
                options.timeout,
                MAX_TIMEOUT.as_secs()
            )));
        }
        let mut tls = TlsConfig::builder();
        if let Some(path) = &options.ca_cert {
            tls = tls.root_certs(RootCerts::Specific(Arc::new(read_ca_file(path)?)));
        }
        let agent = Agent::config_builder()
            .timeout_global(Some(options.timeout))
            // Statuses are checked here, so the message can say what was expected.
            .http_status_as_error(false)
            // /debug/tasks does not move; a redirect elsewhere is refused, not followed.
            .max_redirects(0)
            // A kept-alive connection would be a long-lived task of the very
            // service `watch` samples, ageing at its connection spawn site.
            .max_idle_connections(0)
            .user_agent(concat!("leakcheck/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .new_agent();
        Ok(Client {
            agent,
            url: full_url,
            authorization: options
                .bearer_token
                .as_ref()
                .map(|token| format!("Bearer {}", token.trim())),
            timeout: options.timeout,
        })
    }

    /// The URL fetched, with the default path filled in.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// GETs the URL and returns the body of a `200` answer; errors are
    /// sentence fragments meant to follow the URL.
    pub fn get(&self) -> Result<Vec<u8>, String> {
        let mut request = self
            .agent
            .get(&self.url)
            .header("Accept", "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request.call().map_err(|e| self.problem(e))?;
        let status = response.status();
        if status != ureq::http::StatusCode::OK {
            let hint = match status.as_u16() {
                401 | 403 => " (pass a bearer token with --token or LEAKCHECK_TOKEN)".to_owned(),
                300..=399 => match response.headers().get("location") {
                    Some(location) => format!(
                        " (it redirects to {:?}: give that URL instead)",
                        String::from_utf8_lossy(location.as_bytes())
                    ),
                    None => " (a redirect without a Location)".to_owned(),
                },
                _ => " (is this the server's /debug/tasks?)".to_owned(),
            };
            return Err(format!(
                "the server answered {status}, expected 200 OK{hint}"
            ));
        }
        response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| self.problem(e))
    }

    fn problem(&self, error: ureq::Error) -> String {
        match error {
            ureq::Error::Timeout(_) => {
                format!("no complete answer within {} ms", self.timeout.as_millis())
            }
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                format!("cannot connect: {error} (is the server running?)")
            }
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                format!("cannot connect: {io} (is the server running?)")
            }
            ureq::Error::BodyExceedsLimit(_) => format!(
                "answer larger than the {} MiB limit for a leakcheck document",
                MAX_RESPONSE_BYTES >> 20
            ),
            other => format!("request failed: {other}"),
        }
    }
}

/// `http://host:port` → `http://host:port/debug/tasks`; other paths are kept.
fn with_default_path(url: &str) -> Result<String, String> {
    const EXAMPLE: &str = "expected a URL like http://127.0.0.1:8080/debug/tasks";
    let uri: Uri = url.parse().map_err(|_| EXAMPLE.to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("unsupported scheme {other:?}: use http or https")),
        None => return Err(EXAMPLE.to_owned()),
    }
    let authority = uri.authority().ok_or("the URL names no host")?;
    if authority.host().is_empty() {
        return Err("the URL names no host".to_owned());
    }
    let text = authority.as_str();
    if text.contains('@') {
        return Err(
            "credentials in the URL are not supported: pass a bearer token with --token".to_owned(),
        );
    }
    let after_host = &text[text.rfind(']').map_or(0, |end| end + 1)..];
    if after_host.contains(':') && authority.port_u16().is_none() {
        let port = &after_host[after_host.rfind(':').map_or(0, |colon| colon + 1)..];
        return Err(format!("invalid port {port:?}"));
    }
    Ok(match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("" | "/") => format!("{}{DEBUG_TASKS_PATH}", url.trim_end_matches('/')),
        Some(_) => url.to_owned(),
    })
}

fn read_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::input(path, format!("cannot read the --ca-cert file: {e}")))?;
    if !bytes.starts_with(b"-----BEGIN") && bytes.first() == Some(&0x30) {
        // A DER certificate starts with an ASN.1 SEQUENCE (0x30).
        return Ok(vec![ureq::tls::Certificate::from_der(&bytes).to_owned()]);
    }
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        match item {
            Ok(PemItem::Certificate(certificate)) => certificates.push(certificate),
            Ok(_) => {}
            Err(e) => {
                return Err(CliError::input(
                    path,
                    format!("not a PEM certificate file: {e}"),
                ));
            }
        }
    }
    if certificates.is_empty() {
        return Err(CliError::input(
            path,
            "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_path_get_the_debug_tasks_path() {
        assert_eq!(
            with_default_path("http://localhost").unwrap(),
            "http://localhost/debug/tasks"
        );
        assert_eq!(
            with_default_path("https://127.0.0.1:8443/").unwrap(),
            "https://127.0.0.1:8443/debug/tasks"
        );
        assert_eq!(
            with_default_path("http://[::1]:9000/debug/tasks?x=1").unwrap(),
            "http://[::1]:9000/debug/tasks?x=1"
        );
    }

    #[test]
    fn urls_that_are_not_http_are_refused_with_a_reason() {
        assert!(
            with_default_path("ftp://127.0.0.1/")
                .unwrap_err()
                .contains("unsupported scheme")
        );
        assert!(
            with_default_path("127.0.0.1:8080")
                .unwrap_err()
                .contains("expected a URL")
        );
        assert!(
            with_default_path("http://127.0.0.1:http/")
                .unwrap_err()
                .contains("invalid port \"http\"")
        );
        assert!(
            with_default_path("http://user:pw@127.0.0.1/")
                .unwrap_err()
                .contains("credentials")
        );
    }
}

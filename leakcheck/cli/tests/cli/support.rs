//! Running the binary, fixture paths, scratch directories and a one-shot HTTP server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts a bad-input style failure: the exit code, exactly one line on
    /// stderr mentioning every `needles`, and no panic.
    pub fn assert_one_line_error(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.code, code, "exit code; stderr: {}", self.stderr);
        assert!(
            !self.stderr.contains("panicked"),
            "panicked: {}",
            self.stderr
        );
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one line expected: {}",
            self.stderr
        );
        assert!(
            self.stderr.starts_with("leakcheck: error: "),
            "{}",
            self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "{needle:?} missing from: {}",
                self.stderr
            );
        }
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout expected: {}",
            self.stdout
        );
    }
}

/// Runs `leakcheck` with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    run_in_with_env(dir, args, &[])
}

/// Runs `leakcheck` with `args` in the fixtures directory, `env` set.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_in_with_env(&fixtures(), args, env)
}

/// Environment variables that would change where requests go or what the binary prints.
const SCRUBBED_ENV: &[&str] = &[
    "RUST_BACKTRACE",
    "LEAKCHECK_TOKEN",
    "GITHUB_ACTIONS",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
];

fn run_in_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leakcheck"));
    command.args(args).current_dir(dir);
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    let output = command
        .envs(env.iter().copied())
        .output()
        .expect("the leakcheck binary runs");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Runs `leakcheck` with `args` in the fixtures directory.
pub fn run(args: &[&str]) -> Run {
    run_in(&fixtures(), args)
}

/// `tests/fixtures/`; the tests name fixtures relative to it.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fresh directory for one test, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("leakcheck-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> String {
        self.0
            .join(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_owned()
    }

    /// Names of the files in the directory, sorted (hidden ones included).
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read scratch dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server on 127.0.0.1 that answers one connection with `response` (after
/// reading the request head) and then waits for the client to close. The
/// join handle returns the request head.
pub fn serve_once(response: Vec<u8>) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            if stream.read(&mut byte).expect("read request") == 0 {
                break;
            }
            head.push(byte[0]);
        }
        stream.write_all(&response).expect("write response");
        // Hold the connection until the client is done with it.
        let _ = stream.read(&mut byte);
        String::from_utf8_lossy(&head).into_owned()
    });
    (address, handle)
}

/// A `200 OK` answer with a Content-Length.
pub fn ok_with_length(body: &[u8]) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

/// A `200 OK` answer with the body in chunks of `chunk` bytes.
pub fn ok_chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut response =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for piece in body.chunks(chunk) {
        response.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        response.extend_from_slice(piece);
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(b"0\r\n\r\n");
    response
}

//! `leakcheck-server`: a hyper/rustls HTTP service with leakcheck built in, every defense
//! against task leaks switched on, and a `--bug` switch to remove each one.
//!
//! [`run`] builds a tokio runtime with a [`leakcheck::Tracker`] installed, serves plain HTTP
//! and HTTPS until told to stop, drains within the shutdown grace, cancels what is left,
//! and then verifies that no task spawned since start is still alive. [`spawn`] does the
//! same on a thread of its own and hands back the bound addresses, for tests.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod bugs;
pub mod config;
pub mod deadline;
pub mod debug;
pub mod http2;
pub mod io;
pub mod labels;
pub mod listener;
pub mod metrics;
pub mod routes;
pub mod shutdown;
pub mod tls;
pub mod upstream;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use crate::bugs::Bug;
pub use crate::config::{Args, CertSource, Config, Tracking};

use crate::debug::{CancellationLog, Stage};
use crate::listener::{ConnectionContext, Transport, accept_loop};
use crate::metrics::Metrics;
use crate::routes::App;
use crate::upstream::Upstream;

/// How long the shutdown verification waits for cancelled tasks to finish unwinding.
pub const VERIFY_GRACE: Duration = Duration::from_secs(1);

/// How long dropping the runtime may wait for its blocking threads after verification.
pub const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Time the binary's shutdown may take beyond `--shutdown-grace` + [`VERIFY_GRACE`] (report
/// rendering, symbolization) before its watchdog exits with [`EXIT_LEAKS`].
pub const SHUTDOWN_SLACK: Duration = Duration::from_secs(10);

/// Exit code of the binary when tasks outlived shutdown.
pub const EXIT_LEAKS: u8 = 3;

/// Where the server listens, known once it is bound.
#[derive(Debug, Clone)]
pub struct Bound {
    /// Plain HTTP address.
    pub http: SocketAddr,
    /// HTTPS address.
    pub https: SocketAddr,
    /// The certificate the HTTPS port presents.
    pub certificate: CertificateDer<'static>,
}

/// How a server run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Tasks still alive after the drain; `None` when clean or when tracking was off.
    pub leaks: Option<leakcheck::LeakReport>,
    /// Whether a shutdown verification ran (tracking on).
    pub verified: bool,
}

/// Why the server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// The TLS certificate or key is unusable.
    Tls(tls::TlsError),
    /// The `--upstream` URL is unusable.
    Upstream(upstream::BadUpstream),
    /// A listen address could not be bound.
    Bind {
        /// The flag that named it.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The tokio runtime could not be built.
    Runtime(std::io::Error),
    /// The server thread panicked.
    Panicked,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Tls(error) => error.fmt(f),
            ServerError::Upstream(error) => error.fmt(f),
            ServerError::Bind { flag, addr, source } => {
                write!(
                    f,
                    "cannot listen on {addr} ({flag}): {source}; pick another address (port 0 picks a free one)"
                )
            }
            ServerError::Runtime(error) => write!(f, "cannot start the tokio runtime: {error}"),
            ServerError::Panicked => f.write_str("the server thread panicked"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Runs the server on a new runtime until `stop()` resolves, then drains and verifies. `stop` is
/// called inside the runtime before the listeners are bound and `on_ready` announces them.
/// `on_ready` is called once both ports are bound.
pub fn run<F, S>(
    config: Config,
    on_ready: impl FnOnce(&Bound),
    stop: F,
) -> Result<Outcome, ServerError>
where
    F: FnOnce() -> S,
    S: Future<Output = ()>,
{
    let tls = tls::setup(&config.cert).map_err(ServerError::Tls)?;
    let cancellations = Arc::new(CancellationLog::default());
    let tracker = match config.tracking {
        Tracking::Off => None,
        tracking => {
            let log = Arc::clone(&cancellations);
            let backtrace = if tracking == Tracking::Full {
                leakcheck::BacktraceMode::Full
            } else {
                leakcheck::BacktraceMode::Off
            };
            Some(
                leakcheck::Tracker::builder()
                    .backtrace(backtrace)
                    .on_label_drained(move |label| log.record(label, Stage::TasksDrained))
                    .build(),
            )
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("leakcheck-server-worker");
    if let Some(workers) = config.worker_threads {
        builder.worker_threads(workers);
    }
    if let Some(tracker) = &tracker {
        tracker.install(&mut builder);
    }
    let runtime = builder.build().map_err(ServerError::Runtime)?;
    let outcome = runtime.block_on(async move {
        // Every task spawned from here on belongs to the verified scope.
        let scope = tracker.as_ref().map(|_| {
            leakcheck::verify_none()
                .named("leakcheck-server shutdown")
                .grace(VERIFY_GRACE)
        });
        serve(&config, tls, tracker, cancellations, on_ready, stop()).await?;
        let leaks = match scope {
            Some(scope) => scope.verify().await.err(),
            None => {
                return Ok(Outcome {
                    leaks: None,
                    verified: false,
                });
            }
        };
        Ok(Outcome {
            leaks,
            verified: true,
        })
    });
    // Verification is done; do not wait on blocking-pool threads stuck in a syscall.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    outcome
}

async fn serve(
    config: &Config,
    tls: tls::TlsSetup,
    tracker: Option<leakcheck::Tracker>,
    cancellations: Arc<CancellationLog>,
    on_ready: impl FnOnce(&Bound),
    stop: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let bind = |flag: &'static str, addr: SocketAddr| {
        listen(addr).map_err(|source| ServerError::Bind { flag, addr, source })
    };
    let http = bind("--listen", config.listen)?;
    let https = bind("--tls-listen", config.tls_listen)?;
    let local = |listener: &TcpListener, flag, addr| {
        listener
            .local_addr()
            .map_err(|source| ServerError::Bind { flag, addr, source })
    };
    let bound = Bound {
        http: local(&http, "--listen", config.listen)?,
        https: local(&https, "--tls-listen", config.tls_listen)?,
        certificate: tls.certificate,
    };

    let metrics = Arc::new(Metrics::new(&tokio::runtime::Handle::current()));
    let upstream =
        Arc::new(Upstream::new(config, Arc::clone(&metrics)).map_err(ServerError::Upstream)?);
    let app = Arc::new(App::new(
        config,
        Arc::clone(&upstream),
        Arc::clone(&metrics),
        cancellations,
        tracker,
    ));
    let context = Arc::new(ConnectionContext::new(
        config,
        routes::service(app, config),
        metrics,
    ));
    let shutdown = CancellationToken::new();
    let plain = tokio::spawn(accept_loop(
        http,
        Transport::Plain,
        Arc::clone(&context),
        shutdown.clone(),
    ));
    let secure = tokio::spawn(accept_loop(
        https,
        Transport::Tls(TlsAcceptor::from(tls.server_config)),
        context,
        shutdown.clone(),
    ));
    on_ready(&bound);

    stop.await;
    let deadline = Instant::now() + config.shutdown_grace;
    shutdown.cancel();
    for accept in [plain, secure] {
        if let Err(error) = accept.await {
            tracing::error!(%error, "accept loop ended abnormally");
        }
    }
    upstream.drain(deadline).await;
    Ok(())
}

/// Pending connections each listener queues before the kernel drops SYNs (capped by
/// `net.core.somaxconn`). tokio's default of 1,024 fills in well under a second when
/// thousands of clients connect while the server is short of CPU, and a dropped SYN costs
/// the client a one-second retransmit: a health check stuck behind a connect storm.
pub const LISTEN_BACKLOG: u32 = 8_192;

/// Binds `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `TcpListener::bind` sets).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A server running on a thread of its own; stopped (and joined) by [`RunningServer::shutdown`] or on drop.
#[derive(Debug)]
pub struct RunningServer {
    bound: Bound,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<Outcome, ServerError>>>,
}

impl RunningServer {
    /// Where it listens, and its certificate.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Starts the graceful shutdown and waits for the drain and verification.
    pub fn shutdown(mut self) -> Result<Outcome, ServerError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<Outcome, ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| ServerError::Panicked)?,
            None => Err(ServerError::Panicked),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop_and_join();
        }
    }
}

/// Starts the server on its own thread and runtime and returns once it is bound.
pub fn spawn(config: Config) -> Result<RunningServer, ServerError> {
    let (ready, bound) = std::sync::mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("leakcheck-server".to_owned())
        .spawn(move || {
            run(
                config,
                |bound| {
                    let _ = ready.send(bound.clone());
                },
                || async {
                    let _ = stopped.await;
                },
            )
        })
        .map_err(ServerError::Runtime)?;
    match bound.recv() {
        Ok(bound) => Ok(RunningServer {
            bound,
            stop: Some(stop),
            thread: Some(thread),
        }),
        // The thread ended before binding: its result says why.
        Err(_) => match thread.join() {
            Ok(Err(error)) => Err(error),
            _ => Err(ServerError::Panicked),
        },
    }
}

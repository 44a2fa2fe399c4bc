//! What this machine allows right now, measured in the same run as the figures judged
//! against it: a cancel floor and a probe floor.
//!
//! The cancel floor is measured just before the cancel storm: the same
//! abort storm (the same number of sockets, the same FIN/RST plan, the same abort loop)
//! against a bare tokio listener whose per-connection task does nothing but wait for the
//! close. No server can learn of an abort sooner than that task does, so its latencies are
//! what this machine, under its current load, allows any server: the kernel's teardown of
//! thousands of loopback sockets, the client's own close loop, and the scheduling of the
//! tasks that see the closes.
//!
//! The probe floor is a bare HTTP responder probed on the same schedule as the server's
//! health probes, at the same moments: whatever the machine's other load does to a probe's
//! latency, it does to both.
//!
//! Both listeners run on a runtime of their own (as many workers as the server has, on threads
//! of their own), not on the campaign's, so they compete for the CPU the way the server
//! process does. They are written here rather than borrowed from an HTTP library: what they
//! measure is precisely the absence of one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cpu::{self, SchedMillis, SchedTime};
use crate::error::{Error, Result};
use crate::faults::clients::{AbortStyle, abort};
use crate::history::monotonic_now_ns;
use crate::measure::Latencies;
use crate::scenarios::CANCEL_P99_LIMIT_MS;

/// Longest wait for every calibration connection to be held.
const HOLD_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for the bare listener to see every close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Name of the listener's threads (their CPU is read by name).
const FLOOR_THREAD: &str = "cancel-floor";
/// Bytes a calibration client sends first: its index, so each close is matched to its abort.
const INDEX_BYTES: usize = 8;

/// Abort → the bare listener's task saw the close, over one calibration storm.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CancelFloor {
    /// Connections held at once and aborted together.
    pub connections: u64,
    /// Closes the listener saw (the latencies).
    pub seen: u64,
    /// How long the client's abort loop took.
    pub aborts_sent_ms: f64,
    /// Median abort → close-seen latency.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// CPU the listener's threads spent per close seen, from the first abort until it had
    /// seen them all (reading, stamping and closing its end).
    pub cpu_per_close_us: Option<f64>,
}

/// What the cancel storm measured beside its latencies, and the budget its p99 is judged by.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CancelStormFigures {
    /// The bare listener's figures, taken just before the storm.
    pub floor: CancelFloor,
    /// Requests aborted together.
    pub aborted: u64,
    /// How long the client's abort loop took.
    pub aborts_sent_ms: f64,
    /// First abort → the server back to its live tasks from before the storm, by its own
    /// gauges; `None` when it did not get there within the wait.
    pub drain_ms: Option<f64>,
    /// The server's threads over [`HOLDING_WINDOW_MS`] while it held every request, before
    /// the aborts: the work of holding them (lease renewals, stream chunks).
    pub server_holding: Option<SchedMillis>,
    /// The server's threads from the first abort to the end of the drain: time on a CPU and
    /// time runnable but waiting for one (the machine's other load).
    pub server_drain: Option<SchedMillis>,
    /// CPU the server spent per cancelled request during the drain, the holding work taken out.
    pub server_cpu_per_cancel_us: Option<f64>,
    /// The cancel p99 budget: the target plus the drain's busy time (on a CPU or waiting for
    /// one) spread over the CPUs. See [`cancel_budget_ms`].
    pub budget_ms: Option<f64>,
}

/// Length of the holding window of [`CancelStormFigures::server_holding`].
pub const HOLDING_WINDOW_MS: u64 = 250;

impl CancelStormFigures {
    /// The figures of one storm: `holding` over [`HOLDING_WINDOW_MS`], `drain` over `drain_span`.
    pub fn new(
        floor: CancelFloor,
        aborted: u64,
        aborts_sent_ms: f64,
        drain_span: Option<Duration>,
        holding: Option<SchedTime>,
        drain: Option<SchedTime>,
    ) -> Self {
        let per_cancel = match (drain, holding, drain_span) {
            (Some(drain), Some(holding), Some(span)) if aborted > 0 => {
                let holding_share = holding.on_cpu.as_secs_f64() * span.as_secs_f64()
                    / (HOLDING_WINDOW_MS as f64 / 1000.0);
                let spent = (drain.on_cpu.as_secs_f64() - holding_share).max(0.0);
                Some(spent * 1e6 / aborted as f64)
            }
            _ => None,
        };
        CancelStormFigures {
            floor,
            aborted,
            aborts_sent_ms,
            drain_ms: drain_span.map(|span| span.as_secs_f64() * 1000.0),
            server_holding: holding.map(SchedMillis::from),
            server_drain: drain.map(SchedMillis::from),
            server_cpu_per_cancel_us: per_cancel,
            budget_ms: drain_span.and(drain).map(cancel_budget_ms),
        }
    }
}

/// The cancel p99 a server can be held to when `drain` is what its threads did from the
/// first abort to the end of the drain: [`CANCEL_P99_LIMIT_MS`] plus the drain's busy time
/// (on a CPU, or runnable and waiting for one) divided by the CPUs.
///
/// A request can only be late for two reasons: the server was working through the requests
/// aborted before it (or was runnable and the machine's other load had the CPUs), or it was
/// idle while the request was still alive — waiting on a timer, a deadline, a wake-up that
/// did not come. The first is the hardware's limit and grows the budget; the second is a
/// cancellation bug and does not: a server idle for longer than the target while a
/// cancelled request lingers fails. Work-conserving, so on an idle machine with a server
/// that drains fast the budget shrinks to the target itself. More CPU per cancel also grows
/// the budget, which is why the CPU per cancelled request has a limit of its own.
pub fn cancel_budget_ms(drain: SchedTime) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get()) as f64;
    let busy = (drain.on_cpu + drain.waiting).as_secs_f64() * 1000.0;
    CANCEL_P99_LIMIT_MS + busy / cpus
}

/// Holds one connection per entry of `styles` to a bare listener, then aborts them all in
/// one loop (entry `i` in `styles[i]`), and times each abort to the moment the listener's
/// task for that connection saw it. `connect_gap` paces the connects as the storm does.
pub async fn measure_cancel_floor(
    styles: &[AbortStyle],
    connect_gap: Duration,
) -> Result<CancelFloor> {
    let fault = |source| Error::Fault {
        what: "the cancel-floor listener",
        source,
    };
    let runtime = FloorRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(FLOOR_THREAD)
            .build()
            .map_err(fault)?,
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(fault)?;
    listener.set_nonblocking(true).map_err(fault)?;
    let addr = listener.local_addr().map_err(fault)?;
    let listener = {
        // Registered with the calibration runtime's IO driver, not the campaign's.
        let _on = runtime.handle().enter();
        TcpListener::from_std(listener).map_err(fault)?
    };
    let seen = Arc::new(Mutex::new(vec![None; styles.len()]));
    let (held_tx, mut held_rx) = mpsc::unbounded_channel();
    runtime
        .handle()
        .spawn(bare_listener(listener, Arc::clone(&seen), held_tx));

    let streams = hold(addr, styles.len(), connect_gap, &mut held_rx)
        .await
        .map_err(fault)?;
    let mut aborted = Vec::with_capacity(streams.len());
    let floor_threads = || cpu::threads_of(std::process::id(), |name| name == FLOOR_THREAD);
    let cpu_at_abort = floor_threads();
    let started = Instant::now();
    for (index, stream) in streams {
        aborted.push((index, abort(stream, styles[index])));
    }
    let aborts_sent_ms = started.elapsed().as_secs_f64() * 1000.0;

    let deadline = Instant::now() + CLOSE_WAIT;
    while Instant::now() < deadline
        && seen.lock().iter().filter(|at| at.is_some()).count() < aborted.len()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let floor_cpu = floor_threads()
        .zip(cpu_at_abort)
        .map(|(now, then)| now - then);
    let mut latencies = Latencies::default();
    {
        let seen = seen.lock();
        for (index, aborted_at) in &aborted {
            if let Some(seen_at) = seen[*index] {
                latencies.record(Duration::from_nanos(seen_at.saturating_sub(*aborted_at)));
            }
        }
    }
    drop(runtime);
    Ok(CancelFloor {
        connections: aborted.len() as u64,
        seen: latencies.len(),
        aborts_sent_ms,
        p50_ms: latencies.quantile_ms(0.5),
        p99_ms: latencies.quantile_ms(0.99),
        cpu_per_close_us: floor_cpu
            .filter(|_| !latencies.is_empty())
            .map(|spent| spent.on_cpu.as_secs_f64() * 1e6 / latencies.len() as f64),
    })
}

/// The calibration runtime, shut down without waiting when dropped (a runtime may not be
/// dropped the blocking way inside the campaign's async code).
#[derive(Debug)]
struct FloorRuntime(Option<tokio::runtime::Runtime>);

impl FloorRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for FloorRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Connects `count` clients, `connect_gap` apart, each sending its index, and returns their
/// sockets once the listener holds every one of them.
async fn hold(
    addr: SocketAddr,
    count: usize,
    connect_gap: Duration,
    held: &mut mpsc::UnboundedReceiver<usize>,
) -> std::io::Result<Vec<(usize, TcpStream)>> {
    let mut connects = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    for index in 0..count {
        tokio::time::sleep_until(next).await;
        next += connect_gap;
        connects.spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            stream.write_all(&(index as u64).to_le_bytes()).await?;
            Ok::<_, std::io::Error>((index, stream))
        });
    }
    let mut streams = Vec::with_capacity(count);
    while let Some(joined) = connects.join_next().await {
        streams.push(joined.map_err(std::io::Error::other)??);
    }
    let deadline = Instant::now() + HOLD_WAIT;
    for holding in 0..count {
        if !matches!(
            tokio::time::timeout_at(deadline, held.recv()).await,
            Ok(Some(_))
        ) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("it holds {holding} of {count} connections after {HOLD_WAIT:?}"),
            ));
        }
    }
    Ok(streams)
}

/// Accepts forever; each connection's task reads the client's index, reports it held, then
/// waits for the close and stamps it (before closing its own end, as a server learns of an
/// abort before it tears the connection down).
async fn bare_listener(
    listener: TcpListener,
    seen: Arc<Mutex<Vec<Option<u64>>>>,
    held: mpsc::UnboundedSender<usize>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let seen = Arc::clone(&seen);
        let held = held.clone();
        tokio::spawn(async move {
            let mut index = [0u8; INDEX_BYTES];
            if stream.read_exact(&mut index).await.is_err() {
                return;
            }
            let index = u64::from_le_bytes(index) as usize;
            let _ = held.send(index);
            let mut rest = [0u8; 64];
            // Nothing more is sent: the read ends with the close (EOF or a reset).
            while let Ok(n) = stream.read(&mut rest).await {
                if n == 0 {
                    break;
                }
            }
            let at = monotonic_now_ns();
            if let Some(slot) = seen.lock().get_mut(index) {
                *slot = Some(at);
            }
        });
    }
}

/// Whether a thread of this process is one of the floors' (not the campaign's client).
pub fn is_floor_thread(name: &str) -> bool {
    name == FLOOR_THREAD || name == PROBE_FLOOR_THREAD
}

/// The answer of the probe floor to any request.
const FLOOR_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";
/// Longest request head the probe floor reads.
const FLOOR_MAX_HEAD: usize = 8 * 1024;
/// Name of the probe floor's threads.
const PROBE_FLOOR_THREAD: &str = "probe-floor";

/// A bare HTTP responder on its own runtime: reads a request head, answers `200 ok`, closes.
/// Stopped when dropped.
#[derive(Debug)]
pub struct ProbeFloor {
    addr: SocketAddr,
    _runtime: FloorRuntime,
}

impl ProbeFloor {
    /// Starts it on a free loopback port.
    pub fn start() -> std::io::Result<Self> {
        let runtime = FloorRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name(PROBE_FLOOR_THREAD)
                .build()?,
        ));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _on = runtime.handle().enter();
            TcpListener::from_std(listener)?
        };
        runtime.handle().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(answer(stream));
            }
        });
        Ok(ProbeFloor {
            addr,
            _runtime: runtime,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < FLOOR_MAX_HEAD {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = stream.write_all(FLOOR_RESPONSE).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_probe_floor_answers_200() {
        let floor = ProbeFloor::start().unwrap();
        let response = crate::http::get(floor.addr(), "/healthz", &[], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            (response.head.status, &response.body[..]),
            (200, &b"ok\n"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cancel_floor_sees_every_abort() {
        let styles = [
            AbortStyle::Fin,
            AbortStyle::Rst,
            AbortStyle::Fin,
            AbortStyle::Rst,
        ];
        let floor = measure_cancel_floor(&styles, Duration::ZERO).await.unwrap();
        assert_eq!((floor.connections, floor.seen), (4, 4));
        assert!(floor.p99_ms.is_some() && floor.cpu_per_close_us.is_some());
    }

    #[test]
    fn the_budget_is_the_target_plus_the_busy_time_per_cpu() {
        let cpus = std::thread::available_parallelism().unwrap().get() as f64;
        let idle = cancel_budget_ms(SchedTime::default());
        assert_eq!(idle, CANCEL_P99_LIMIT_MS);
        let busy = cancel_budget_ms(SchedTime {
            on_cpu: Duration::from_millis(100),
            waiting: Duration::from_millis(300),
        });
        assert!(
            (busy - (CANCEL_P99_LIMIT_MS + 400.0 / cpus)).abs() < 1e-9,
            "{busy}"
        );
    }
}

//! cancel-storm: thousands of requests held in flight at the same moment, then aborted
//! together (half with a FIN, half with a RST), each abort timed on the monotonic clock the
//! server stamps `/debug/cancellations` with.
//!
//! Every client connects and sends a request the server keeps open — a `/stream` that sends
//! one small chunk a second (held once its head arrived) or a `/work` whose children sleep
//! for a minute — and hands its socket back. Once the server's own in-flight gauge shows them
//! all, one loop closes every socket, as fast as the client can.

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    CANCEL_STORM_CLIENTS, CLIENT_DEADLINE, LEAKY_STRANDED_MAX, StormContext, open_loop,
    request_id_prefix,
};
use crate::calibration::{self, CancelStormFigures};
use crate::cpu;
use crate::error::Result;
use crate::faults::clients::{AbortStyle, abort};
use crate::history::Outcome;
use crate::http;

/// A stream that lasts minutes at one 16-byte chunk a second: held by its body.
const STREAM_PATH: &str = "/stream?chunks=100000&interval_ms=1000&size=16";
/// Two children sleeping a minute: held by its handler, before any response head.
const WORK_PATH: &str = "/work?children=2&ms=60000";
/// Longest wait for the server's gauge to show every held request.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for the server to drain the aborted requests before the run goes on
/// (campaign, smoke); a leaky server never gets there.
const DRAIN_WAIT: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(1));
/// Time between two looks at the server's gauges while it drains.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Connects per second while the clients line up (the listen backlog takes about 1,000).
const CONNECTS_PER_SECOND: usize = 2_500;

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    // Leaky: every client leaves its detached lease keeper.
    let clients = ctx.clients(
        CANCEL_STORM_CLIENTS.0,
        CANCEL_STORM_CLIENTS.1,
        LEAKY_STRANDED_MAX,
    );
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let plan: Vec<(&'static str, AbortStyle)> = (0..clients)
        .map(|_| {
            let path = if rng.random_bool(0.5) {
                STREAM_PATH
            } else {
                WORK_PATH
            };
            let style = if rng.random_bool(0.5) {
                AbortStyle::Fin
            } else {
                AbortStyle::Rst
            };
            (path, style)
        })
        .collect();
    // Live tasks before any client: the drain is over when the server is back to it.
    let live_before = ctx.endpoints.live_tasks().await?;
    let batch = (CONNECTS_PER_SECOND / 10).max(1);
    let connect_gap = Duration::from_millis(100) / batch as u32;
    let styles: Vec<AbortStyle> = plan.iter().map(|(_, style)| *style).collect();
    let floor = calibration::measure_cancel_floor(&styles, connect_gap).await?;
    ctx.progress.say(&format!(
        "cancel floor (bare listener, {} sockets, aborts sent in {:.1} ms): p50 {} / p99 {}, {:.1} µs of CPU per close",
        floor.connections,
        floor.aborts_sent_ms,
        show_ms(floor.p50_ms),
        show_ms(floor.p99_ms),
        floor.cpu_per_close_us.unwrap_or(f64::NAN),
    ));
    let prefix = request_id_prefix(ctx.seed);
    let addr = ctx.endpoints.http;
    let (held, mut holding) = mpsc::unbounded_channel();
    open_loop(clients, batch, Duration::from_millis(100), |index| {
        let history = std::sync::Arc::clone(&ctx.history);
        let held = held.clone();
        let request_id = format!("{prefix}{index}");
        let (path, style) = plan[index];
        async move {
            match tokio::time::timeout(CLIENT_DEADLINE, hold(addr, path, &request_id)).await {
                Ok(Some(stream)) => {
                    let _ = held.send((request_id, stream, style));
                }
                _ => history.record(Outcome::Fail, "not held by the server"),
            }
        }
    })
    .await;
    drop(held);
    let mut streams = Vec::with_capacity(clients);
    while let Some(entry) = holding.recv().await {
        streams.push(entry);
    }
    let in_flight = wait_for_in_flight(ctx, streams.len() as u64).await;
    // What merely holding the requests costs the server (lease renewals, stream chunks).
    let pid = ctx.endpoints.pid;
    let quiet_from = cpu::process(pid);
    tokio::time::sleep(Duration::from_millis(calibration::HOLDING_WINDOW_MS)).await;
    let holding_cost = cpu::process(pid)
        .zip(quiet_from)
        .map(|(now, then)| now - then);
    ctx.progress.say(&format!(
        "{} of {clients} requests held; the server counts {in_flight} in flight; aborting them together",
        streams.len()
    ));
    let server_at_abort = cpu::process(pid);
    let started = Instant::now();
    let aborted = streams.len();
    for (request_id, stream, style) in streams {
        let at = abort(stream, style);
        ctx.history.record_abort(request_id, at);
        ctx.history.record(Outcome::Info, "held, then aborted");
    }
    let aborts_sent_ms = started.elapsed().as_secs_f64() * 1000.0;
    ctx.progress
        .say(&format!("aborts sent in {aborts_sent_ms:.1} ms"));
    let drained = wait_for_drain(ctx, live_before).await;
    let drain_span = started.elapsed();
    let drain_cost = cpu::process(pid)
        .zip(server_at_abort)
        .map(|(now, then)| now - then);
    match drained {
        Some(live) => ctx.progress.say(&format!(
            "server back to {live} live tasks {:.0} ms after the first abort",
            drain_span.as_secs_f64() * 1000.0
        )),
        None => ctx.progress.say(&format!(
            "server not back to {live_before} live tasks within {:?} of the aborts",
            ctx.scale.pick(DRAIN_WAIT.0, DRAIN_WAIT.1)
        )),
    }
    let figures = CancelStormFigures::new(
        floor,
        aborted as u64,
        aborts_sent_ms,
        drained.map(|_| drain_span),
        holding_cost,
        drain_cost,
    );
    if let (Some(drain), Some(per_cancel)) =
        (figures.server_drain, figures.server_cpu_per_cancel_us)
    {
        ctx.progress.say(&format!(
            "server during the drain: {:.0} ms on a CPU, {:.0} ms waiting for one; {per_cancel:.1} µs of CPU per cancelled request",
            drain.on_cpu_ms, drain.waiting_ms
        ));
    }
    *ctx.cancel_storm.lock() = Some(figures);
    Ok(())
}

/// Waits (on the cheap `/metrics` gauges, not a `/debug/tasks` snapshot of thousands of
/// tasks, which would compete with the very drain being timed) until the server holds no
/// request and is back to `live_before` tasks, or [`DRAIN_WAIT`] passes. Returns the live
/// count once drained.
async fn wait_for_drain(ctx: &StormContext<'_>, live_before: u64) -> Option<u64> {
    let deadline = Instant::now() + ctx.scale.pick(DRAIN_WAIT.0, DRAIN_WAIT.1);
    while Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
        // The request asking is in flight too.
        let in_flight = ctx.endpoints.in_flight().await.ok()?.saturating_sub(1);
        if in_flight > 0 {
            continue;
        }
        let live = ctx.endpoints.live_tasks().await.ok()?;
        if live <= live_before {
            return Some(live);
        }
    }
    None
}

/// Sends the request and returns the socket once the server holds it: the response head
/// for a stream, the request written for `/work` (the gauge confirms it).
async fn hold(addr: SocketAddr, path: &str, request_id: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let request = http::get_request(path, &[("x-request-id", request_id)]);
    stream.write_all(&request).await.ok()?;
    if path == STREAM_PATH {
        let mut buffered = Vec::new();
        let head = http::read_head(&mut stream, &mut buffered).await.ok()?;
        (head.status == 200).then_some(())?;
    }
    Some(stream)
}

/// Polls the server's in-flight gauge until it shows `held` requests (or
/// [`IN_FLIGHT_WAIT`] passes); returns the last reading.
async fn wait_for_in_flight(ctx: &StormContext<'_>, held: u64) -> u64 {
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    loop {
        // The request asking is in flight too.
        let now = ctx
            .endpoints
            .in_flight()
            .await
            .unwrap_or(0)
            .saturating_sub(1);
        if now >= held || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn show_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
}

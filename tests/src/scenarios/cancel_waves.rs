//! cancel-waves: waves of clients that abort mid-request on `/stream` and `/proxy` (half with
//! a FIN, half with a RST); each abort's time is kept to measure cancel propagation. Meanwhile
//! a nemesis, on its own clock, cycles the upstream proxy through toxiproxy's toxics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{CLIENT_DEADLINE, LEAKY_STRANDED_MAX, StormContext, request_id_prefix};
use crate::error::Result;
use crate::faults::clients::{AbortStyle, abort};
use crate::faults::proxy::{Toxic, ToxicSpec};
use crate::history::{History, Outcome};
use crate::http;

/// Upstream latency injected by the proxy, so `/proxy` requests are still in flight when aborted.
const UPSTREAM_LATENCY: Duration = Duration::from_millis(150);

/// A long stream of small chunks: the response is still going when the client aborts.
const STREAM_PATH: &str = "/stream?chunks=2000&interval_ms=5&size=256";

#[derive(Debug, Clone)]
struct Client {
    request_id: String,
    path: &'static str,
    style: AbortStyle,
    /// How long the client stays after its request is under way (for `/stream`, after the
    /// response head).
    hold: Duration,
}

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    // Leaky: each /stream client (about half) leaves its detached lease keeper.
    let (clients, wave) = ctx.clients((5_000, 250), (120, 40), (LEAKY_STRANDED_MAX * 3 / 2, 50));
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let prefix = request_id_prefix(ctx.seed);
    let plan: Vec<Client> = (0..clients)
        .map(|index| {
            let stream = rng.random_bool(0.5);
            Client {
                request_id: format!("{prefix}{index}"),
                path: if stream { STREAM_PATH } else { "/proxy" },
                style: if rng.random_bool(0.5) {
                    AbortStyle::Fin
                } else {
                    AbortStyle::Rst
                },
                hold: if stream {
                    Duration::from_millis(rng.random_range(0..20))
                } else {
                    Duration::from_millis(rng.random_range(10..60))
                },
            }
        })
        .collect();
    let waves = run_waves(ctx, &plan, wave, &mut rng);
    let nemesis = nemesis(ctx, StdRng::seed_from_u64(ctx.seed ^ NEMESIS_SEED));
    tokio::select! {
        () = waves => {}
        () = nemesis => {}
    }
    Ok(())
}

/// Mixed into the run's seed for the nemesis' own random choices.
const NEMESIS_SEED: u64 = 0x006E_656D_6573_6973;
/// How long each toxic set stays on.
const NEMESIS_PERIOD: Duration = Duration::from_millis(300);

/// The toxic sets the nemesis cycles through, in a seeded order. Every set keeps `/proxy`
/// requests in flight long enough to be aborted (latency, a blackhole or a slow link); some
/// also break them first (a cut response, a reset, a cut request): those end `fail`.
fn toxic_sets() -> Vec<Vec<ToxicSpec>> {
    let latency = ToxicSpec::downstream(Toxic::Latency {
        latency: UPSTREAM_LATENCY,
        jitter: Duration::from_millis(20),
    });
    vec![
        vec![
            latency,
            ToxicSpec::downstream(Toxic::Slicer {
                average_size: 64,
                size_variation: 32,
                delay: Duration::from_millis(1),
            }),
        ],
        vec![
            latency,
            ToxicSpec::downstream(Toxic::Bandwidth {
                bytes_per_sec: 4_096,
            }),
        ],
        vec![
            latency,
            ToxicSpec::downstream(Toxic::SlowClose {
                delay: Duration::from_millis(200),
            }),
        ],
        vec![
            latency,
            ToxicSpec::downstream(Toxic::LimitData { bytes: 40 }),
        ],
        vec![ToxicSpec::upstream(Toxic::Timeout {
            after: Duration::ZERO,
        })],
        vec![
            ToxicSpec::upstream(Toxic::Bandwidth { bytes_per_sec: 512 }),
            ToxicSpec::downstream(Toxic::ResetPeer {
                after: Duration::from_millis(100),
            }),
        ],
        vec![latency, ToxicSpec::upstream(Toxic::LimitData { bytes: 16 })],
    ]
}

/// Switches the proxy's toxics every [`NEMESIS_PERIOD`] until dropped (the storm's end),
/// going through every set once per cycle in a seeded order.
async fn nemesis(ctx: &StormContext<'_>, mut rng: StdRng) {
    let mut sets = toxic_sets();
    loop {
        sets.shuffle(&mut rng);
        for set in &sets {
            ctx.env.proxy.set_toxics(set.clone());
            tokio::time::sleep(NEMESIS_PERIOD).await;
        }
    }
}

async fn run_waves(ctx: &StormContext<'_>, plan: &[Client], wave: usize, rng: &mut StdRng) {
    for (number, wave_clients) in plan.chunks(wave).enumerate() {
        let mut running = JoinSet::new();
        for client in wave_clients {
            // Spread the wave's starts over ~WAVE_SPREAD: aborts then arrive as a stream (about
            // 1,000 per second), not one burst that would measure the run queue instead.
            let start = Duration::from_micros(rand_start(rng));
            running.spawn(run_client(
                ctx.endpoints.http,
                client.clone(),
                start,
                Arc::clone(&ctx.history),
            ));
        }
        while running.join_next().await.is_some() {}
        let counts = ctx.history.counts();
        ctx.progress.say(&format!(
            "wave {}/{}: {} aborted, {} ok, {} failed so far",
            number + 1,
            plan.len().div_ceil(wave),
            counts.info,
            counts.ok,
            counts.fail
        ));
    }
}

/// Time over which one wave's clients start.
const WAVE_SPREAD: Duration = Duration::from_millis(250);

fn rand_start(rng: &mut StdRng) -> u64 {
    rng.random_range(0..WAVE_SPREAD.as_micros() as u64)
}

async fn run_client(addr: SocketAddr, client: Client, start: Duration, history: Arc<History>) {
    tokio::time::sleep(start).await;
    let (outcome, class) = tokio::time::timeout(CLIENT_DEADLINE, exchange(addr, &client, &history))
        .await
        .unwrap_or((Outcome::Info, "unanswered at the client deadline"));
    history.record(outcome, class);
}

async fn exchange(addr: SocketAddr, client: &Client, history: &History) -> (Outcome, &'static str) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (Outcome::Fail, "connect failed");
    };
    let request = http::get_request(client.path, &[("x-request-id", &client.request_id)]);
    if stream.write_all(&request).await.is_err() {
        return (Outcome::Fail, "request not sent");
    }
    let mut buffered = Vec::new();
    if client.path == STREAM_PATH {
        match http::read_head(&mut stream, &mut buffered).await {
            Ok(head) if head.status == 200 => tokio::time::sleep(client.hold).await,
            _ => return (Outcome::Fail, "/stream failed before the abort"),
        }
    } else {
        tokio::select! {
            () = tokio::time::sleep(client.hold) => {}
            head = http::read_head(&mut stream, &mut buffered) => {
                // Answered before the client gave up: nothing was cancelled.
                return match head {
                    Ok(head) if head.status == 200 => (Outcome::Ok, "/proxy 200 before the abort"),
                    // The nemesis' toxics cut or reset the upstream exchange.
                    _ => (Outcome::Fail, "/proxy failed before the abort"),
                };
            }
        }
    }
    let at = abort(stream, client.style);
    history.record_abort(client.request_id.clone(), at);
    (Outcome::Info, "aborted mid-request")
}

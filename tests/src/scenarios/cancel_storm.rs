//! cancel-storm: waves of clients that abort mid-request on `/stream` and `/proxy` (half with
//! a FIN, half with a RST); each abort's time is kept to measure cancel propagation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{CLIENT_DEADLINE, StormContext, request_id_prefix};
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
    let (clients, wave) = ctx.scale.pick((5_000, 250), (120, 40));
    ctx.env.proxy.set_toxics(vec![
        ToxicSpec::downstream(Toxic::Latency {
            latency: UPSTREAM_LATENCY,
            jitter: Duration::from_millis(20),
        }),
        ToxicSpec::downstream(Toxic::Slicer {
            average_size: 64,
            size_variation: 32,
            delay: Duration::from_millis(1),
        }),
    ]);
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
    for (number, wave_clients) in plan.chunks(wave).enumerate() {
        let mut running = JoinSet::new();
        for client in wave_clients {
            // Spread the wave's starts over ~WAVE_SPREAD: aborts then arrive as a stream (about
            // 1,000 per second), not one burst that would measure the run queue instead.
            let start = Duration::from_micros(rand_start(&mut rng));
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
            "wave {}/{}: {} aborted so far",
            number + 1,
            plan.len().div_ceil(wave),
            counts.info
        ));
    }
    Ok(())
}

/// Time over which one wave's clients start.
const WAVE_SPREAD: Duration = Duration::from_millis(250);

fn rand_start(rng: &mut StdRng) -> u64 {
    rng.random_range(0..WAVE_SPREAD.as_micros() as u64)
}

async fn run_client(addr: SocketAddr, client: Client, start: Duration, history: Arc<History>) {
    tokio::time::sleep(start).await;
    let outcome = tokio::time::timeout(CLIENT_DEADLINE, exchange(addr, &client, &history))
        .await
        .unwrap_or(Outcome::Info);
    history.record(outcome);
}

async fn exchange(addr: SocketAddr, client: &Client, history: &History) -> Outcome {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Outcome::Fail;
    };
    let request = http::get_request(client.path, &[("x-request-id", &client.request_id)]);
    if stream.write_all(&request).await.is_err() {
        return Outcome::Fail;
    }
    let mut buffered = Vec::new();
    if client.path == STREAM_PATH {
        match http::read_head(&mut stream, &mut buffered).await {
            Ok(head) if head.status == 200 => tokio::time::sleep(client.hold).await,
            _ => return Outcome::Fail,
        }
    } else {
        tokio::select! {
            () = tokio::time::sleep(client.hold) => {}
            head = http::read_head(&mut stream, &mut buffered) => {
                // Answered before the client gave up: nothing was cancelled.
                return match head {
                    Ok(head) if head.status == 200 => Outcome::Ok,
                    _ => Outcome::Fail,
                };
            }
        }
    }
    let at = abort(stream, client.style);
    history.record_abort(client.request_id.clone(), at);
    Outcome::Info
}

//! slowloris: header drips on the HTTP port, mixed with silent connections, garbage bytes and
//! half-closed requests.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::{CLIENT_DEADLINE, HEADER_TIMEOUT, LEAKY_STRANDED_MAX, StormContext, open_loop};
use crate::error::Result;
use crate::faults::clients::{self, Held};
use crate::history::{History, Outcome};
use crate::http;

#[derive(Debug, Clone)]
enum Attack {
    Drip,
    Silent,
    Garbage(Vec<u8>),
    HalfClose,
}

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    // Leaky: every client but the half-closing ones pins one connection task.
    let clients = ctx.clients(1_000, 60, LEAKY_STRANDED_MAX);
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let attacks: Vec<Attack> = (0..clients)
        .map(|_| match rng.random_range(0..10) {
            0..6 => Attack::Drip,
            6..8 => Attack::Silent,
            8 => {
                let len = rng.random_range(1..512);
                Attack::Garbage((0..len).map(|_| rng.random()).collect())
            }
            _ => Attack::HalfClose,
        })
        .collect();
    let hold = HEADER_TIMEOUT * 2 + Duration::from_millis(500);
    let addr = ctx.endpoints.http;
    open_loop(clients, 200, Duration::from_millis(50), |index| {
        let attack = attacks[index].clone();
        let history = Arc::clone(&ctx.history);
        async move {
            let deadline = Instant::now() + hold;
            let held = match attack {
                Attack::Drip => {
                    clients::slowloris(addr, Duration::from_millis(100), deadline).await
                }
                Attack::Silent => match clients::connect_and_stall(addr).await {
                    Ok(stream) => Ok(clients::hold_until_closed(stream, deadline).await),
                    Err(error) => Err(error),
                },
                Attack::Garbage(bytes) => clients::send_and_hold(addr, &bytes, deadline).await,
                Attack::HalfClose => {
                    let request = http::get_request("/work", &[]);
                    let response =
                        clients::half_close_after_request(addr, &request, CLIENT_DEADLINE).await;
                    match response {
                        Ok(Some(response)) if response.head.status == 200 => {
                            history.record(Outcome::Ok, "half-closed /work 200");
                        }
                        Ok(Some(_)) => {
                            history.record(Outcome::Fail, "half-closed /work error status")
                        }
                        // hyper's half_close(false): a client's FIN aborts its request.
                        Ok(None) => {
                            history.record(Outcome::Fail, "half-closed /work dropped at the FIN")
                        }
                        Err(_) => history.record(
                            Outcome::Fail,
                            "half-closed /work unanswered at the client deadline",
                        ),
                    }
                    return;
                }
            };
            settle(held, &history);
        }
    })
    .await;
    Ok(())
}

/// A hostile connection the server closed failed (the defense fired); one still open is parked.
fn settle(held: std::io::Result<Held>, history: &History) {
    match held {
        Ok(Held::Open(stream)) => {
            history.record(Outcome::Info, "still connected at the client deadline");
            history.park(stream);
        }
        Ok(Held::Closed { .. }) => history.record(Outcome::Fail, "closed by the server"),
        Err(_) => history.record(Outcome::Fail, "connect failed"),
    }
}

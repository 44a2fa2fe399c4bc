//! tls-stall: clients that open the TLS port and stall the handshake — silent, half a
//! ClientHello, or one byte per second.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::{HANDSHAKE_TIMEOUT, LEAKY_STRANDED_MAX, StormContext, open_loop};
use crate::error::Result;
use crate::faults::clients::Held;
use crate::faults::tls::{TlsStall, stall_handshake};
use crate::history::Outcome;

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    // Leaky: every client pins one connection task.
    let clients = ctx.clients(1_000, 60, LEAKY_STRANDED_MAX);
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let styles: Vec<TlsStall> = (0..clients)
        .map(|_| match rng.random_range(0..3) {
            0 => TlsStall::Silent,
            1 => TlsStall::Partial,
            _ => TlsStall::Drip {
                interval: Duration::from_secs(1),
            },
        })
        .collect();
    // Each client holds on for twice the server's handshake deadline.
    let hold = HANDSHAKE_TIMEOUT * 2 + Duration::from_millis(500);
    let addr = ctx.endpoints.https;
    open_loop(clients, 200, Duration::from_millis(50), |index| {
        let style = styles[index];
        let history = Arc::clone(&ctx.history);
        async move {
            match stall_handshake(addr, style, Instant::now() + hold).await {
                // The server gave up on the handshake: the defense fired, the handshake failed.
                Ok(Held::Closed { .. }) => {
                    history.record(Outcome::Fail, "handshake cut by the server");
                }
                Err(_) => history.record(Outcome::Fail, "connect failed"),
                Ok(Held::Open(stream)) => {
                    history.record(Outcome::Info, "handshake still open at the client deadline");
                    history.park(stream);
                }
            }
        }
    })
    .await;
    Ok(())
}

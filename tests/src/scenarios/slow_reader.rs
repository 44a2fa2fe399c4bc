//! slow-reader: `/stream` clients with a 2 KiB receive buffer that read 64 bytes every 200 ms.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{StormContext, WRITE_TIMEOUT, open_loop};
use crate::error::Result;
use crate::faults::clients::{Held, slow_reader};
use crate::history::Outcome;

const RECEIVE_BUFFER: usize = 2048;
const READ_SIZE: usize = 64;
const READ_INTERVAL: Duration = Duration::from_millis(200);

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    let clients = ctx.scale.pick(300, 20);
    let hold = WRITE_TIMEOUT * 3 + Duration::from_millis(500);
    let addr = ctx.endpoints.http;
    open_loop(clients, 100, Duration::from_millis(50), |_| {
        let history = Arc::clone(&ctx.history);
        async move {
            let held = slow_reader(
                addr,
                "/stream",
                RECEIVE_BUFFER,
                READ_SIZE,
                READ_INTERVAL,
                Instant::now() + hold,
            )
            .await;
            match held {
                Ok(Held::Open(stream)) => {
                    history.record(Outcome::Info);
                    history.park(stream);
                }
                // Cut off by the write deadline (or the stream ended): the read did not complete.
                Ok(Held::Closed { .. }) | Err(_) => history.record(Outcome::Fail),
            }
        }
    })
    .await;
    Ok(())
}

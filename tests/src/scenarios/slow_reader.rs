//! slow-reader: `/stream` clients with a 2 KiB receive buffer that read 64 bytes every 200 ms
//! for a while, then stop reading and stay connected.
//!
//! The reading phase is short on purpose: a client that keeps dripping reads unblocks each
//! write before a per-write deadline fires, so it is not what a write deadline is for (see
//! the notes); the stop is.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{LEAKY_STRANDED_MAX, StormContext, open_loop, request_id_prefix};
use crate::error::Result;
use crate::faults::clients::{Held, slow_reader};
use crate::history::Outcome;

/// 16 KiB chunks every 5 ms (3.2 MB/s) for minutes: the response outlasts any client, and
/// fills the server's send buffer (loopback sizes it at ~2.6 MB from the 64 KiB MSS) within
/// a second of the client going quiet, so the write deadline has a blocked write to cut.
const STREAM_PATH: &str = "/stream?size=16384&interval_ms=5&chunks=100000";
const RECEIVE_BUFFER: usize = 2048;
const READ_SIZE: usize = 64;
const READ_INTERVAL: Duration = Duration::from_millis(200);

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    // Leaky: every client pins its connection task, the stream's producer and its lease keeper.
    let clients = ctx.clients(100, 20, LEAKY_STRANDED_MAX / 3);
    let reading = Duration::from_millis(600);
    let addr = ctx.endpoints.http;
    let prefix = request_id_prefix(ctx.seed);
    open_loop(clients, 5, Duration::from_millis(100), |index| {
        let history = Arc::clone(&ctx.history);
        let request_id = format!("{prefix}{index}");
        async move {
            let held = slow_reader(
                addr,
                STREAM_PATH,
                &request_id,
                RECEIVE_BUFFER,
                READ_SIZE,
                READ_INTERVAL,
                Instant::now() + reading,
            )
            .await;
            match held {
                Ok(Held::Open(stream)) => {
                    history.record(Outcome::Info, "still connected when it stopped reading");
                    history.park(stream);
                }
                // Cut off by the write deadline (or the stream ended): the read did not complete.
                Ok(Held::Closed { .. }) => history.record(Outcome::Fail, "closed by the server"),
                Err(_) => history.record(Outcome::Fail, "connect failed"),
            }
        }
    })
    .await;
    Ok(())
}

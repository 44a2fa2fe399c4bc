//! pool-exhaustion: `/proxy` requests against an upstream that accepts and never answers,
//! through a small pool.

use std::sync::Arc;
use std::time::Duration;

use super::{StormContext, get_or_park, open_loop, request_id_prefix};
use crate::error::Result;

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    let requests = ctx.scale.pick(2_000, 100);
    ctx.env.upstream.stall();
    let prefix = request_id_prefix(ctx.seed);
    let addr = ctx.endpoints.http;
    open_loop(requests, 250, Duration::from_millis(100), |index| {
        let history = Arc::clone(&ctx.history);
        let request_id = format!("{prefix}{index}");
        async move {
            get_or_park(addr, "/proxy", &request_id, &history).await;
        }
    })
    .await;
    ctx.progress.say(&format!(
        "stalled upstream holds {} requests",
        ctx.env.upstream.requests()
    ));
    Ok(())
}

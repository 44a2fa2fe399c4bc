//! dns-hang: `/proxy` requests while the nameserver swallows every query.

use std::sync::Arc;
use std::time::Duration;

use super::{LEAKY_STRANDED_MAX, StormContext, get_or_park, open_loop, request_id_prefix};
use crate::error::Result;

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    // Leaky: every request pins its connection task, and the hung lookups add a few more.
    let requests = ctx.clients(500, 40, LEAKY_STRANDED_MAX * 9 / 10);
    ctx.env.dns.blackhole();
    let queries_before = ctx.env.dns.queries();
    let prefix = request_id_prefix(ctx.seed);
    let addr = ctx.endpoints.http;
    open_loop(requests, 100, Duration::from_millis(50), |index| {
        let history = Arc::clone(&ctx.history);
        let request_id = format!("{prefix}{index}");
        async move {
            get_or_park(addr, "/proxy", &request_id, &history).await;
        }
    })
    .await;
    ctx.progress.say(&format!(
        "nameserver swallowed {} queries",
        ctx.env.dns.queries() - queries_before
    ));
    Ok(())
}

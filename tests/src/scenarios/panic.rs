//! panic: `/panic` requests, half of them with a panicking child task (`?child=1`), among
//! `/work` requests that must keep succeeding.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{LEAKY_STRANDED_MAX, StormContext, get_or_park, open_loop, request_id_prefix};
use crate::error::Result;

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    // Leaky: each /panic?child=1 (half of them) pins its connection task and its lease keeper.
    let requests = ctx.clients(600, 40, LEAKY_STRANDED_MAX * 4 / 5);
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let paths: Vec<&'static str> = (0..requests)
        .map(|_| match rng.random_range(0..4) {
            0 => "/panic",
            1 | 2 => "/panic?child=1",
            _ => "/work",
        })
        .collect();
    let prefix = request_id_prefix(ctx.seed);
    let addr = ctx.endpoints.http;
    open_loop(requests, 50, Duration::from_millis(50), |index| {
        let history = Arc::clone(&ctx.history);
        let path = paths[index];
        let request_id = format!("{prefix}{index}");
        async move {
            get_or_park(addr, path, &request_id, &history).await;
        }
    })
    .await;
    Ok(())
}

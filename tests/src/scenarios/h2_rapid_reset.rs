//! h2-rapid-reset: HTTP/2 clients on the TLS port that open streams for /work and reset each
//! one at once (CVE-2023-44487), then vanish without closing.
//!
//! With the defense, every attacker connection is told GOAWAY `ENHANCE_YOUR_CALM` once more
//! than 20 of its resets reach the server before it accepted their streams, and closed: its
//! connection task and stream tasks end. Without it
//! (`no-h2-reset-limit`) every stream of every attacker is accepted, started and cancelled,
//! and the connection stays served: when the attacker vanishes its connection task is left
//! waiting on it, until the keep-alive ping gives up on it long after the verdict.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::{LEAKY_STRANDED_MAX, Mode, Scale, StormContext, open_loop, request_id_prefix};
use crate::error::Result;
use crate::faults::h2::{Answer, RapidReset, alpn_h2, rapid_reset, reason_name};
use crate::history::Outcome;

/// The route each attack stream asks for: a handler that spawns a lease keeper and two
/// children, so every accepted stream costs the server real work to start and cancel.
const ATTACK_PATH: &str = "/work?children=2&ms=1000";

/// After its last stream, how long an attacker waits for the server's GOAWAY before it
/// counts its connection as still served.
const LINGER: Duration = Duration::from_secs(1);

/// Longest one attacker connection may take, handshake to linger.
const ATTACKER_BOUND: Duration = Duration::from_secs(15);

/// The client outcome of an attacker the server told to go away with `reason`.
fn goaway_class(reason: &str) -> String {
    format!("GOAWAY {reason}")
}

/// What the attackers saw, over the whole storm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RapidResetFigures {
    /// Attacker connections started.
    pub connections: u64,
    /// Streams each attacker opens and resets at most.
    pub streams_per_connection: u64,
    /// Streams opened and reset, over every connection.
    pub streams_sent: u64,
    /// Connections that got a GOAWAY, by its reason.
    pub goaways: BTreeMap<String, u64>,
    /// Most streams one attacker opened and reset before its GOAWAY: how far past h2's limit
    /// (resets waiting in the accept queue at once, not resets in all) an attacker gets
    /// while the server keeps accepting.
    pub most_streams_before_goaway: u64,
    /// Connections that ended without a GOAWAY.
    pub closed_without_goaway: u64,
    /// Connections still served after every stream and the linger (then parked).
    pub still_served: u64,
    /// Connections that could not be made (connect, TLS, ALPN).
    pub not_connected: u64,
}

impl RapidResetFigures {
    /// Connections that got GOAWAY `ENHANCE_YOUR_CALM`.
    pub fn told_to_calm_down(&self) -> u64 {
        self.goaways.get("ENHANCE_YOUR_CALM").copied().unwrap_or(0)
    }
}

pub(super) async fn storm(ctx: &StormContext<'_>) -> Result<()> {
    // Leaky: every attacker strands its connection task.
    let connections = ctx.clients(200, 8, LEAKY_STRANDED_MAX / 2);
    // h2's limit counts resets of streams the server has not accepted yet, so how many
    // streams an attacker gets in before its GOAWAY depends on how far the server's accepts
    // lag behind its reads: tens to a couple of thousand (`most_streams_before_goaway`). The
    // fixed cap is far above that; the leaky twin sends every stream of its smaller cap.
    let streams = match (ctx.scale, ctx.mode) {
        (_, Mode::Fixed) => 10_000,
        (Scale::Campaign, Mode::Leaky) => 500,
        (Scale::Smoke, Mode::Leaky) => 200,
    };
    let connector = alpn_h2(&ctx.tls.connector);
    let figures = Arc::new(parking_lot::Mutex::new(RapidResetFigures {
        connections: connections as u64,
        streams_per_connection: streams as u64,
        ..RapidResetFigures::default()
    }));
    let addr = ctx.endpoints.https;
    let prefix = request_id_prefix(ctx.seed);
    open_loop(connections, 20, Duration::from_millis(100), |index| {
        let history = Arc::clone(&ctx.history);
        let figures = Arc::clone(&figures);
        let connector = connector.clone();
        let plan = RapidReset {
            streams,
            path: ATTACK_PATH.to_owned(),
            request_id_prefix: format!("{prefix}h2-{index}-"),
            linger: LINGER,
            deadline: Instant::now() + ATTACKER_BOUND,
        };
        async move {
            let report = rapid_reset(addr, &connector, &plan).await;
            let mut figures = figures.lock();
            let report = match report {
                Ok(report) => report,
                Err(_) => {
                    figures.not_connected += 1;
                    history.record(Outcome::Fail, "connect failed");
                    return;
                }
            };
            figures.streams_sent += report.streams_sent;
            match report.answer {
                // The defense fired: the connection was refused further streams.
                Answer::GoAway(reason) => {
                    let reason = reason_name(reason);
                    history.record(Outcome::Fail, &goaway_class(&reason));
                    *figures.goaways.entry(reason).or_default() += 1;
                    figures.most_streams_before_goaway =
                        figures.most_streams_before_goaway.max(report.streams_sent);
                }
                Answer::Closed(_) => {
                    figures.closed_without_goaway += 1;
                    history.record(Outcome::Fail, "closed without GOAWAY");
                }
                Answer::StillServed(connection) => {
                    figures.still_served += 1;
                    history.record(Outcome::Info, "still served after every stream");
                    history.park_connection(connection);
                }
            }
        }
    })
    .await;
    let figures = figures.lock().clone();
    ctx.progress.say(&format!(
        "{} attacker connections, {} streams opened and reset; GOAWAY {:?} (at most {} streams before one), {} closed without one, {} still served",
        figures.connections,
        figures.streams_sent,
        figures.goaways,
        figures.most_streams_before_goaway,
        figures.closed_without_goaway,
        figures.still_served
    ));
    *ctx.rapid_reset.lock() = Some(figures);
    Ok(())
}

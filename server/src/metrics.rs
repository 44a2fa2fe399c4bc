//! Server counters, tokio-metrics runtime and per-route task metrics, exposed with
//! prometheus-client in the OpenMetrics text format.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};
use tokio::runtime::Handle;
use tokio_metrics::{RuntimeIntervals, RuntimeMonitor, TaskMetrics, TaskMonitor};

use crate::routes::Route;

/// The content type of [`Metrics::render`]'s text. OpenMetrics 1.0 is what prometheus-client
/// writes (counters announced as `x`, sampled as `x_total`; a final `# EOF`), and Prometheus
/// asks for it first when it scrapes; read as the 0.0.4 text format, whose `# TYPE` must name
/// the samples exactly, the counters would lose their type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A monotonically increasing count; exposed with a `_total` suffix.
pub type Counter = prometheus_client::metrics::counter::Counter;

/// A gauge counting live [`GaugeGuard`]s (open connections).
#[derive(Debug, Default, Clone)]
pub struct HeldGauge(Gauge);

/// Holds one unit of a [`HeldGauge`] until dropped.
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a HeldGauge);

impl HeldGauge {
    /// Adds one until the guard drops.
    pub fn hold(&self) -> GaugeGuard<'_> {
        self.0.inc();
        GaugeGuard(self)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.0.dec();
    }
}

/// Requests in flight, with the most ever held at once.
#[derive(Debug, Default, Clone)]
pub struct PeakGauge {
    now: Gauge,
    peak: Gauge,
}

impl PeakGauge {
    /// One more in flight.
    pub fn enter(&self) {
        let now = self.now.inc() + 1;
        self.peak.inner().fetch_max(now, Ordering::Relaxed);
    }

    /// One fewer in flight.
    pub fn leave(&self) {
        self.now.dec();
    }
}

/// Upper bounds of [`Histogram`] buckets, in seconds: 100 µs to 10 s, for cancel propagation
/// (the Go reference drains a 5,000-way cancel storm within 8.3 ms at p99).
pub const HISTOGRAM_BOUNDS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// A prometheus-client histogram of durations with [`HISTOGRAM_BOUNDS_SECONDS`] buckets.
#[derive(Debug, Clone)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(prometheus_client::metrics::histogram::Histogram::new(
            HISTOGRAM_BOUNDS_SECONDS,
        ))
    }
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        self.0.observe(duration.as_secs_f64());
    }

    /// Observations so far (prometheus-client reads them back only under `test-util`).
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.0.count()
    }
}

/// Runtime totals accumulated from tokio-metrics' per-interval deltas.
#[derive(Debug)]
struct RuntimeTotals {
    intervals: RuntimeIntervals,
    // tokio-metrics reports polls and steals only under `--cfg tokio_unstable`.
    #[cfg(tokio_unstable)]
    polls: u64,
    parks: u64,
    #[cfg(tokio_unstable)]
    steals: u64,
    busy: Duration,
}

/// The runtime's and the routes' metrics, read from tokio-metrics at each scrape.
#[derive(Debug)]
struct RuntimeCollector {
    #[cfg(all(tokio_unstable, target_has_atomic = "64"))]
    handle: Handle,
    totals: Mutex<RuntimeTotals>,
    routes: Vec<TaskMonitor>,
}

/// Everything /metrics reports.
#[derive(Debug)]
pub struct Metrics {
    /// Connections accepted on either port.
    pub connections_accepted: Counter,
    /// Connections closed at accept because --max-connections was reached.
    pub connections_shed: Counter,
    /// Connections open now.
    pub connections_open: HeldGauge,
    /// Requests from head to the end of their response (streamed bodies included).
    pub requests_in_flight: PeakGauge,
    /// TLS handshakes cut by the handshake deadline.
    pub handshake_timeouts: Counter,
    /// TLS handshakes that failed (garbage, wrong protocol).
    pub handshake_failures: Counter,
    /// HTTP/2 connections cut by the preface deadline.
    pub h2_preface_timeouts: Counter,
    /// /proxy requests answered 503 because no pool slot became free in time.
    pub pool_rejections: Counter,
    /// Upstream name resolutions cut by the DNS deadline.
    pub dns_timeouts: Counter,
    /// Upstream connects, response heads and bodies cut by their deadlines.
    pub upstream_timeouts: Counter,
    /// Streamed responses cut by the whole-response deadline.
    pub stream_timeouts: Counter,
    /// Per-request lease renewals (one per lease keeper tick).
    pub lease_renewals: Counter,
    /// Child tasks of a request that panicked and were answered with 500.
    pub child_panics: Counter,
    routes: Vec<TaskMonitor>,
    /// The metrics above and the runtime collector; what only a scrape knows is added then.
    registry: Registry,
}

impl Metrics {
    /// Metrics for the runtime behind `handle`.
    pub fn new(handle: &Handle) -> Self {
        let routes: Vec<TaskMonitor> = Route::ALL.iter().map(|_| TaskMonitor::new()).collect();
        let mut metrics = Metrics {
            connections_accepted: Counter::default(),
            connections_shed: Counter::default(),
            connections_open: HeldGauge::default(),
            requests_in_flight: PeakGauge::default(),
            handshake_timeouts: Counter::default(),
            handshake_failures: Counter::default(),
            h2_preface_timeouts: Counter::default(),
            pool_rejections: Counter::default(),
            dns_timeouts: Counter::default(),
            upstream_timeouts: Counter::default(),
            stream_timeouts: Counter::default(),
            lease_renewals: Counter::default(),
            child_panics: Counter::default(),
            routes: routes.clone(),
            registry: Registry::default(),
        };
        let registry = &mut metrics.registry;
        // prometheus-client appends `_total` to a counter's name and a `.` to its help.
        for (name, help, counter) in [
            (
                "connections_accepted",
                "Connections accepted",
                &metrics.connections_accepted,
            ),
            (
                "connections_shed",
                "Connections shed at the connection cap",
                &metrics.connections_shed,
            ),
            (
                "tls_handshake_timeouts",
                "TLS handshakes cut by the deadline",
                &metrics.handshake_timeouts,
            ),
            (
                "tls_handshake_failures",
                "TLS handshakes that failed",
                &metrics.handshake_failures,
            ),
            (
                "h2_preface_timeouts",
                "HTTP/2 connections cut by the preface deadline",
                &metrics.h2_preface_timeouts,
            ),
            (
                "pool_rejections",
                "Upstream requests refused with 503 (pool exhausted)",
                &metrics.pool_rejections,
            ),
            (
                "dns_timeouts",
                "Upstream lookups cut by the DNS deadline",
                &metrics.dns_timeouts,
            ),
            (
                "upstream_timeouts",
                "Upstream connects, response heads and bodies cut by their deadlines",
                &metrics.upstream_timeouts,
            ),
            (
                "stream_timeouts",
                "Streamed responses cut by the whole-response deadline",
                &metrics.stream_timeouts,
            ),
            (
                "lease_renewals",
                "Per-request lease renewals",
                &metrics.lease_renewals,
            ),
            (
                "child_panics",
                "Request child tasks that panicked",
                &metrics.child_panics,
            ),
        ] {
            registry.register(format!("{PREFIX}_{name}"), help, counter.clone());
        }
        registry.register(
            format!("{PREFIX}_connections_open"),
            "Connections open now",
            metrics.connections_open.0.clone(),
        );
        registry.register(
            format!("{PREFIX}_requests_in_flight"),
            "Requests from head to the end of their response",
            metrics.requests_in_flight.now.clone(),
        );
        registry.register(
            format!("{PREFIX}_requests_in_flight_peak"),
            "Most requests in flight at once since start",
            metrics.requests_in_flight.peak.clone(),
        );
        registry.register_collector(Box::new(RuntimeCollector {
            #[cfg(all(tokio_unstable, target_has_atomic = "64"))]
            handle: handle.clone(),
            totals: Mutex::new(RuntimeTotals {
                intervals: RuntimeMonitor::new(handle).intervals(),
                #[cfg(tokio_unstable)]
                polls: 0,
                parks: 0,
                #[cfg(tokio_unstable)]
                steals: 0,
                busy: Duration::ZERO,
            }),
            routes,
        }));
        metrics
    }

    /// The task monitor that instruments `route`'s handlers.
    pub fn route(&self, route: Route) -> &TaskMonitor {
        &self.routes[route as usize]
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]); `tracker` is the runtime's leakcheck
    /// tracker when one runs, `upstream_idle` the pool's idle connections, `cancel_propagation`
    /// the time from a request's end to the end of its last task.
    pub fn render(
        &self,
        tracker: Option<&leakcheck::Tracker>,
        upstream_idle: usize,
        cancel_propagation: &Histogram,
    ) -> String {
        let mut scrape = Registry::default();
        scrape.register(
            format!("{PREFIX}_upstream_idle_connections"),
            "Idle pooled upstream connections (one driver task and one socket each)",
            ConstGauge::new(i64::try_from(upstream_idle).unwrap_or(i64::MAX)),
        );
        scrape.register_with_unit(
            format!("{PREFIX}_cancel_propagation"),
            "From a request's end (its handler or body dropped) to the end of its last task; requests whose tasks ended first are not observed",
            Unit::Seconds,
            cancel_propagation.0.clone(),
        );
        if let Some(tracker) = tracker {
            scrape.register(
                "leakcheck_live_tasks",
                "Live tasks tracked by leakcheck",
                ConstGauge::new(tracker.live() as i64),
            );
            let by_site = Family::<[(&'static str, String); 1], Gauge>::default();
            for (site, count) in tracker.live_by_site() {
                by_site
                    .get_or_create(&[("site", site.to_string())])
                    .set(count as i64);
            }
            scrape.register(
                "leakcheck_live_tasks_by_site",
                "Live tasks tracked by leakcheck, per spawn site (path:line:column)",
                by_site,
            );
        }
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &scrape))
            .and_then(|()| encode_eof(&mut out));
        out
    }
}

/// The prefix of the server's own metric names (leakcheck's tracker's are `leakcheck_`).
const PREFIX: &str = "leakcheck_server";

/// Writes one metric without labels.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut totals = self.totals.lock();
        if let Some(interval) = totals.intervals.next() {
            #[cfg(tokio_unstable)]
            {
                totals.polls += interval.total_polls_count;
                totals.steals += interval.total_steal_count;
            }
            totals.parks += interval.total_park_count;
            totals.busy += interval.total_busy_duration;
            for (name, help, value) in [
                (
                    "runtime_workers",
                    "Runtime worker threads.",
                    interval.workers_count,
                ),
                (
                    "runtime_alive_tasks",
                    "Tasks alive in the runtime.",
                    interval.live_tasks_count,
                ),
                (
                    "runtime_global_queue_depth",
                    "Tasks in the global queue.",
                    interval.global_queue_depth,
                ),
            ] {
                let name = format!("{PREFIX}_{name}");
                encode_one(
                    &mut encoder,
                    &name,
                    help,
                    None,
                    &ConstGauge::new(value as i64),
                )?;
            }
        }
        let mut counter = |name: &str, help: &str, value: u64| {
            let name = format!("{PREFIX}_{name}");
            encode_one(&mut encoder, &name, help, None, &ConstCounter::new(value))
        };
        #[cfg(all(tokio_unstable, target_has_atomic = "64"))]
        counter(
            "runtime_spawned_tasks",
            "Tasks spawned on the runtime since start.",
            self.handle.metrics().spawned_tasks_count(),
        )?;
        #[cfg(tokio_unstable)]
        counter("runtime_polls", "Task polls by all workers.", totals.polls)?;
        counter("runtime_parks", "Worker parks.", totals.parks)?;
        #[cfg(tokio_unstable)]
        counter(
            "runtime_steals",
            "Tasks stolen between workers.",
            totals.steals,
        )?;
        let busy = ConstCounter::new(totals.busy.as_secs_f64());
        let name = format!("{PREFIX}_runtime_busy");
        encode_one(
            &mut encoder,
            &name,
            "Time workers spent busy.",
            Some(&Unit::Seconds),
            &busy,
        )?;
        drop(totals);

        let routes: Vec<(Route, TaskMetrics)> = Route::ALL
            .iter()
            .zip(&self.routes)
            .map(|(route, monitor)| (*route, monitor.cumulative()))
            .collect();
        let fields: [(&str, &str, RouteField); 6] = [
            (
                "route_tasks_instrumented",
                "Handler futures started, by route.",
                RouteField::Count(|m| m.instrumented_count),
            ),
            (
                "route_tasks_dropped",
                "Handler futures finished or dropped, by route.",
                RouteField::Count(|m| m.dropped_count),
            ),
            (
                "route_polls",
                "Handler polls, by route.",
                RouteField::Count(|m| m.total_poll_count),
            ),
            (
                "route_poll",
                "Time spent polling handlers, by route.",
                RouteField::Time(|m| m.total_poll_duration),
            ),
            (
                "route_scheduled",
                "Time handlers waited to be polled after waking, by route.",
                RouteField::Time(|m| m.total_scheduled_duration),
            ),
            (
                "route_idle",
                "Time handlers spent idle, by route.",
                RouteField::Time(|m| m.total_idle_duration),
            ),
        ];
        for (name, help, field) in fields {
            field.encode(&mut encoder, name, help, &routes)?;
        }
        Ok(())
    }
}

/// One counter of a route's task metrics: a count, or a time exposed in seconds.
#[derive(Clone, Copy)]
enum RouteField {
    Count(fn(&TaskMetrics) -> u64),
    Time(fn(&TaskMetrics) -> Duration),
}

impl RouteField {
    /// Writes the counter family `leakcheck_server_<name>`, labeled by `route`.
    fn encode(
        self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        routes: &[(Route, TaskMetrics)],
    ) -> fmt::Result {
        let name = format!("{PREFIX}_{name}");
        let unit = matches!(self, RouteField::Time(_)).then_some(Unit::Seconds);
        let mut family =
            encoder.encode_descriptor(&name, help, unit.as_ref(), MetricType::Counter)?;
        for (route, metrics) in routes {
            let labels = [("route", route.name())];
            let sample = family.encode_family(&labels)?;
            match self {
                RouteField::Count(value) => ConstCounter::new(value(metrics)).encode(sample)?,
                RouteField::Time(value) => {
                    ConstCounter::new(value(metrics).as_secs_f64()).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_openmetrics_with_conventional_names() {
        let metrics = Metrics::new(&Handle::current());
        metrics.connections_accepted.inc();
        metrics.requests_in_flight.enter();
        metrics.requests_in_flight.enter();
        metrics.requests_in_flight.leave();
        let open = metrics.connections_open.hold();
        let propagation = Histogram::default();
        propagation.observe(Duration::from_micros(300));
        let text = metrics.render(None, 3, &propagation);
        drop(open);
        for line in [
            "# HELP leakcheck_server_connections_accepted Connections accepted.",
            "# TYPE leakcheck_server_connections_accepted counter",
            "leakcheck_server_connections_accepted_total 1",
            "leakcheck_server_connections_open 1",
            "leakcheck_server_requests_in_flight 1",
            "leakcheck_server_requests_in_flight_peak 2",
            "leakcheck_server_upstream_idle_connections 3",
            "# TYPE leakcheck_server_cancel_propagation_seconds histogram",
            "# UNIT leakcheck_server_cancel_propagation_seconds seconds",
            "leakcheck_server_cancel_propagation_seconds_bucket{le=\"0.00025\"} 0",
            "leakcheck_server_cancel_propagation_seconds_bucket{le=\"0.0005\"} 1",
            "leakcheck_server_cancel_propagation_seconds_bucket{le=\"+Inf\"} 1",
            "leakcheck_server_cancel_propagation_seconds_count 1",
            "# TYPE leakcheck_server_runtime_busy_seconds counter",
            "leakcheck_server_route_polls_total{route=\"metrics\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            !text.contains("_total_total") && !text.contains(".."),
            "{text}"
        );
    }
}

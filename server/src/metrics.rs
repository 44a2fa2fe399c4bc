//! Server counters, tokio-metrics runtime and per-route task metrics, rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio_metrics::{RuntimeIntervals, RuntimeMonitor, TaskMonitor};

use crate::routes::Route;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Open connections; decremented when the returned guard drops.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

/// Holds one unit of a [`Gauge`] until dropped.
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Gauge {
    /// Adds one until the guard drops.
    pub fn hold(&self) -> GaugeGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Requests in flight, with the most ever held at once.
#[derive(Debug, Default)]
pub struct PeakGauge {
    now: AtomicI64,
    peak: AtomicI64,
}

impl PeakGauge {
    /// One more in flight.
    pub fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// One fewer in flight.
    pub fn leave(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }

    /// In flight now.
    pub fn get(&self) -> i64 {
        self.now.load(Ordering::Relaxed)
    }

    /// Most in flight at once since start.
    pub fn peak(&self) -> i64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Upper bounds of [`Histogram`] buckets, in seconds: 100 µs to 10 s, for cancel propagation
/// (the Go reference drains a 5,000-way cancel storm within 8.3 ms at p99).
pub const HISTOGRAM_BOUNDS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// A Prometheus histogram of durations with [`HISTOGRAM_BOUNDS_SECONDS`] buckets, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; HISTOGRAM_BOUNDS_SECONDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = HISTOGRAM_BOUNDS_SECONDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(HISTOGRAM_BOUNDS_SECONDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `_bucket` (cumulative, `le` label), `_sum` and `_count` samples, as `(what follows the
    /// metric's name, value)`.
    fn samples(&self) -> Vec<(String, String)> {
        let mut samples = Vec::with_capacity(HISTOGRAM_BOUNDS_SECONDS.len() + 3);
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = HISTOGRAM_BOUNDS_SECONDS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            samples.push((format!("_bucket{{le=\"{le}\"}}"), cumulative.to_string()));
        }
        let sum = Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)).as_secs_f64();
        samples.push(("_sum".to_owned(), sum.to_string()));
        samples.push(("_count".to_owned(), cumulative.to_string()));
        samples
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
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

/// Everything /metrics reports.
#[derive(Debug)]
pub struct Metrics {
    /// Connections accepted on either port.
    pub connections_accepted: Counter,
    /// Connections closed at accept because --max-connections was reached.
    pub connections_shed: Counter,
    /// Connections open now.
    pub connections_open: Gauge,
    /// Requests from head to the end of their response (streamed bodies included).
    pub requests_in_flight: PeakGauge,
    /// TLS handshakes cut by the handshake deadline.
    pub handshake_timeouts: Counter,
    /// TLS handshakes that failed (garbage, wrong protocol).
    pub handshake_failures: Counter,
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
    runtime: Mutex<RuntimeTotals>,
}

impl Metrics {
    /// Metrics for the runtime behind `handle`.
    pub fn new(handle: &Handle) -> Self {
        Metrics {
            connections_accepted: Counter::default(),
            connections_shed: Counter::default(),
            connections_open: Gauge::default(),
            requests_in_flight: PeakGauge::default(),
            handshake_timeouts: Counter::default(),
            handshake_failures: Counter::default(),
            pool_rejections: Counter::default(),
            dns_timeouts: Counter::default(),
            upstream_timeouts: Counter::default(),
            stream_timeouts: Counter::default(),
            lease_renewals: Counter::default(),
            child_panics: Counter::default(),
            routes: Route::ALL.iter().map(|_| TaskMonitor::new()).collect(),
            runtime: Mutex::new(RuntimeTotals {
                intervals: RuntimeMonitor::new(handle).intervals(),
                #[cfg(tokio_unstable)]
                polls: 0,
                parks: 0,
                #[cfg(tokio_unstable)]
                steals: 0,
                busy: Duration::ZERO,
            }),
        }
    }

    /// The task monitor that instruments `route`'s handlers.
    pub fn route(&self, route: Route) -> &TaskMonitor {
        &self.routes[route as usize]
    }

    /// Prometheus text exposition; `tracker` is the runtime's leakcheck tracker when one runs,
    /// `upstream_idle` the pool's idle connections, `cancel_propagation` the time from a
    /// request's end to the end of its last task.
    pub fn render(
        &self,
        tracker: Option<&leakcheck::Tracker>,
        upstream_idle: usize,
        cancel_propagation: &Histogram,
    ) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |value: String| vec![(String::new(), value)];

        metric(
            "leakcheck_server_connections_accepted_total",
            "counter",
            "Connections accepted.",
            &one(self.connections_accepted.get().to_string()),
        );
        metric(
            "leakcheck_server_connections_shed_total",
            "counter",
            "Connections shed at the connection cap.",
            &one(self.connections_shed.get().to_string()),
        );
        metric(
            "leakcheck_server_connections_open",
            "gauge",
            "Connections open now.",
            &one(self.connections_open.get().to_string()),
        );
        metric(
            "leakcheck_server_requests_in_flight",
            "gauge",
            "Requests from head to the end of their response.",
            &one(self.requests_in_flight.get().to_string()),
        );
        metric(
            "leakcheck_server_requests_in_flight_peak",
            "gauge",
            "Most requests in flight at once since start.",
            &one(self.requests_in_flight.peak().to_string()),
        );
        metric(
            "leakcheck_server_tls_handshake_timeouts_total",
            "counter",
            "TLS handshakes cut by the deadline.",
            &one(self.handshake_timeouts.get().to_string()),
        );
        metric(
            "leakcheck_server_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed.",
            &one(self.handshake_failures.get().to_string()),
        );
        metric(
            "leakcheck_server_pool_rejections_total",
            "counter",
            "Upstream requests refused with 503 (pool exhausted).",
            &one(self.pool_rejections.get().to_string()),
        );
        metric(
            "leakcheck_server_dns_timeouts_total",
            "counter",
            "Upstream lookups cut by the DNS deadline.",
            &one(self.dns_timeouts.get().to_string()),
        );
        metric(
            "leakcheck_server_upstream_timeouts_total",
            "counter",
            "Upstream connects, response heads and bodies cut by their deadlines.",
            &one(self.upstream_timeouts.get().to_string()),
        );
        metric(
            "leakcheck_server_stream_timeouts_total",
            "counter",
            "Streamed responses cut by the whole-response deadline.",
            &one(self.stream_timeouts.get().to_string()),
        );
        metric(
            "leakcheck_server_lease_renewals_total",
            "counter",
            "Per-request lease renewals.",
            &one(self.lease_renewals.get().to_string()),
        );
        metric(
            "leakcheck_server_child_panics_total",
            "counter",
            "Request child tasks that panicked.",
            &one(self.child_panics.get().to_string()),
        );
        metric(
            "leakcheck_server_upstream_idle_connections",
            "gauge",
            "Idle pooled upstream connections (one driver task and one socket each).",
            &one(upstream_idle.to_string()),
        );
        // A histogram's samples follow its name with a suffix: `_bucket{le="…"}`, `_sum`, `_count`.
        metric(
            "leakcheck_server_cancel_propagation_seconds",
            "histogram",
            "From a request's end (its handler or body dropped) to the end of its last task; requests whose tasks ended first are not observed.",
            &cancel_propagation.samples(),
        );
        if let Some(tracker) = tracker {
            metric(
                "leakcheck_live_tasks",
                "gauge",
                "Live tasks tracked by leakcheck.",
                &one(tracker.live().to_string()),
            );
            let by_site: Vec<(String, String)> = tracker
                .live_by_site()
                .into_iter()
                .map(|(site, count)| {
                    let site = site.to_string().replace('\\', "\\\\").replace('"', "\\\"");
                    (format!("{{site=\"{site}\"}}"), count.to_string())
                })
                .collect();
            metric(
                "leakcheck_live_tasks_by_site",
                "gauge",
                "Live tasks tracked by leakcheck, per spawn site (path:line:column).",
                &by_site,
            );
        }

        {
            let mut runtime = self.runtime.lock();
            if let Some(interval) = runtime.intervals.next() {
                #[cfg(tokio_unstable)]
                {
                    runtime.polls += interval.total_polls_count;
                    runtime.steals += interval.total_steal_count;
                }
                runtime.parks += interval.total_park_count;
                runtime.busy += interval.total_busy_duration;
                metric(
                    "leakcheck_server_runtime_workers",
                    "gauge",
                    "Runtime worker threads.",
                    &one(interval.workers_count.to_string()),
                );
                metric(
                    "leakcheck_server_runtime_alive_tasks",
                    "gauge",
                    "Tasks alive in the runtime.",
                    &one(interval.live_tasks_count.to_string()),
                );
                metric(
                    "leakcheck_server_runtime_global_queue_depth",
                    "gauge",
                    "Tasks in the global queue.",
                    &one(interval.global_queue_depth.to_string()),
                );
            }
            #[cfg(all(tokio_unstable, target_has_atomic = "64"))]
            metric(
                "leakcheck_server_runtime_spawned_tasks_total",
                "counter",
                "Tasks spawned on the runtime since start.",
                &one(tokio::runtime::Handle::current()
                    .metrics()
                    .spawned_tasks_count()
                    .to_string()),
            );
            #[cfg(tokio_unstable)]
            metric(
                "leakcheck_server_runtime_polls_total",
                "counter",
                "Task polls by all workers.",
                &one(runtime.polls.to_string()),
            );
            metric(
                "leakcheck_server_runtime_parks_total",
                "counter",
                "Worker parks.",
                &one(runtime.parks.to_string()),
            );
            #[cfg(tokio_unstable)]
            metric(
                "leakcheck_server_runtime_steals_total",
                "counter",
                "Tasks stolen between workers.",
                &one(runtime.steals.to_string()),
            );
            metric(
                "leakcheck_server_runtime_busy_seconds_total",
                "counter",
                "Time workers spent busy.",
                &one(format!("{:.6}", runtime.busy.as_secs_f64())),
            );
        }

        let per_route =
            |value: &dyn Fn(&tokio_metrics::TaskMetrics) -> String| -> Vec<(String, String)> {
                Route::ALL
                    .iter()
                    .map(|route| {
                        (
                            format!("{{route=\"{}\"}}", route.name()),
                            value(&self.route(*route).cumulative()),
                        )
                    })
                    .collect()
            };
        metric(
            "leakcheck_server_route_tasks_instrumented_total",
            "counter",
            "Handler futures started, by route.",
            &per_route(&|m| m.instrumented_count.to_string()),
        );
        metric(
            "leakcheck_server_route_tasks_dropped_total",
            "counter",
            "Handler futures finished or dropped, by route.",
            &per_route(&|m| m.dropped_count.to_string()),
        );
        metric(
            "leakcheck_server_route_polls_total",
            "counter",
            "Handler polls, by route.",
            &per_route(&|m| m.total_poll_count.to_string()),
        );
        metric(
            "leakcheck_server_route_poll_seconds_total",
            "counter",
            "Time spent polling handlers, by route.",
            &per_route(&|m| format!("{:.6}", m.total_poll_duration.as_secs_f64())),
        );
        metric(
            "leakcheck_server_route_scheduled_seconds_total",
            "counter",
            "Time handlers waited to be polled after waking, by route.",
            &per_route(&|m| format!("{:.6}", m.total_scheduled_duration.as_secs_f64())),
        );
        metric(
            "leakcheck_server_route_idle_seconds_total",
            "counter",
            "Time handlers spent idle, by route.",
            &per_route(&|m| format!("{:.6}", m.total_idle_duration.as_secs_f64())),
        );
        out
    }
}

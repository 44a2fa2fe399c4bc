//! Measurements of a running server on a timeline: health-probe latency, live tasks and open
//! fds sampled in the background, phase marks, quiescence, and latency percentiles.
//!
//! The probes avoid coordinated omission: they go out on a fixed schedule (one HTTP and one
//! HTTPS probe every [`PROBE_INTERVAL`]), each on its own task whether or not earlier ones
//! returned, and each latency runs from the probe's intended send time. A one-second stall
//! then shows up as twenty slow probes per scheme, not one.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cpu::{self, SchedTime};
use crate::server::{Endpoints, ServerTls};

/// Time between two health probes of one scheme.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Time between two samples of live tasks and open fds.
pub const RESOURCE_INTERVAL: Duration = Duration::from_millis(200);
/// A probe slower than this counts as failed, at this latency.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(1);

/// A latency histogram in microseconds (1 µs to 60 s, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(
            Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("static histogram bounds are valid"),
        )
    }
}

impl Latencies {
    /// Records one latency (clamped into the histogram's range).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// Recorded values.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `quantile` (0..=1) in milliseconds, `None` when empty.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(quantile) as f64 / 1000.0)
    }
}

/// Which port a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS, handshake included.
    Https,
    /// Plain HTTP to the bare responder of [`crate::calibration::ProbeFloor`], not the server:
    /// what the machine's load alone does to a probe at that moment.
    Floor,
}

/// One probe on the timeline.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProbePoint {
    /// Milliseconds since the run started, at the probe's intended send time.
    pub at_ms: u64,
    /// Which port it asked.
    pub scheme: Scheme,
    /// Latency from the intended send time, in ms; `None` when the probe failed.
    pub latency_ms: Option<f64>,
    /// Whether it counts towards the storm's percentiles.
    pub counted: bool,
}

/// Probe latencies of one scheme during the storm.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProbeStats {
    /// Probes sent while counted.
    pub sent: u64,
    /// Probes that failed or passed [`PROBE_DEADLINE`] (counted at the deadline).
    pub failures: u64,
    /// Median latency from the intended send time.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile.
    pub p999_ms: Option<f64>,
    /// Slowest.
    pub max_ms: Option<f64>,
    /// 99th percentile of the latencies net of CPU starvation: each probe's latency less the
    /// time the server's (or, if longer, the client's) threads spent runnable but waiting for
    /// a CPU during its flight, per CPU ([`Starvation`]). Failed probes count in full.
    pub net_p99_ms: Option<f64>,
}

impl ProbeStats {
    fn of(latencies: &Latencies, failures: u64, net: &Latencies) -> Self {
        ProbeStats {
            sent: latencies.len(),
            failures,
            p50_ms: latencies.quantile_ms(0.5),
            p99_ms: latencies.quantile_ms(0.99),
            p999_ms: latencies.quantile_ms(0.999),
            max_ms: latencies.quantile_ms(1.0),
            net_p99_ms: net.quantile_ms(0.99),
        }
    }
}

/// The server's and the client's threads' run-queue waits over a run, sampled on the probe
/// schedule, so the time a probe or a cancellation spent merely waiting for a CPU (the
/// machine's other load, not the server) can be told from its latency.
#[derive(Debug, Clone, Default)]
pub struct Starvation {
    /// (ms since the run's origin, server threads' total wait, client threads' total wait).
    samples: Vec<(f64, Duration, Duration)>,
    cpus: u32,
}

impl Starvation {
    fn record(&mut self, at_ms: f64, server: Option<SchedTime>, client: Option<SchedTime>) {
        if let (Some(server), Some(client)) = (server, client) {
            self.samples.push((at_ms, server.waiting, client.waiting));
        }
    }

    /// How long, per CPU, the server's threads (or the client's, whichever is more) waited
    /// for a CPU between `from_ms` and `to_ms` (ms since the origin), interpolated between
    /// samples; 0 outside the sampled span.
    pub fn between_ms(&self, from_ms: f64, to_ms: f64) -> f64 {
        let waited = |pick: fn(&(f64, Duration, Duration)) -> Duration| {
            let at = |t: f64| self.interpolate(t, pick);
            (at(to_ms) - at(from_ms)).max(0.0)
        };
        let server = waited(|sample| sample.1);
        let client = waited(|sample| sample.2);
        server.max(client) / f64::from(self.cpus.max(1))
    }

    fn interpolate(&self, t: f64, pick: fn(&(f64, Duration, Duration)) -> Duration) -> f64 {
        let ms = |sample: &(f64, Duration, Duration)| pick(sample).as_secs_f64() * 1000.0;
        let after = self.samples.partition_point(|sample| sample.0 <= t);
        match (
            after.checked_sub(1).map(|i| &self.samples[i]),
            self.samples.get(after),
        ) {
            (Some(before), Some(next)) if next.0 > before.0 => {
                let share = (t - before.0) / (next.0 - before.0);
                ms(before) + share * (ms(next) - ms(before))
            }
            (Some(before), _) => ms(before),
            (None, Some(next)) => ms(next),
            (None, None) => 0.0,
        }
    }
}

/// Health-probe latency over both ports.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProbeSummary {
    /// `GET /healthz` over HTTP.
    pub http: ProbeStats,
    /// `GET /healthz` over HTTPS on a fresh TLS connection.
    pub https: ProbeStats,
    /// The same plain HTTP probe to a bare responder at the same moments (the probe floor).
    pub floor: ProbeStats,
}

impl ProbeSummary {
    /// The worse net-of-starvation p99 of the two schemes the server answers.
    pub fn worst_net_p99_ms(&self) -> Option<f64> {
        match (self.http.net_p99_ms, self.https.net_p99_ms) {
            (Some(http), Some(https)) => Some(http.max(https)),
            (one, other) => one.or(other),
        }
    }

    /// The worse p99 of the two schemes the server answers.
    pub fn worst_p99_ms(&self) -> Option<f64> {
        match (self.http.p99_ms, self.https.p99_ms) {
            (Some(http), Some(https)) => Some(http.max(https)),
            (one, other) => one.or(other),
        }
    }
}

/// One resource sample on the timeline.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ResourcePoint {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// Live tracked tasks, when `/debug/tasks` answered.
    pub live_tasks: Option<u64>,
    /// Open fds, while the process exists.
    pub open_fds: Option<u64>,
    /// How long the live-task reading took, in ms.
    pub read_ms: Option<f64>,
}

/// A named moment of a run (storm, heal, quiesced, sigterm…).
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// What began.
    pub name: String,
}

/// Everything sampled during one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// Health probes.
    pub probes: Vec<ProbePoint>,
    /// Live tasks and open fds.
    pub resources: Vec<ResourcePoint>,
    /// Phase marks.
    pub phases: Vec<Phase>,
}

impl Timeline {
    /// Largest live-task sample.
    pub fn peak_live(&self) -> Option<u64> {
        self.resources
            .iter()
            .filter_map(|point| point.live_tasks)
            .max()
    }

    /// Largest open-fd sample.
    pub fn peak_fds(&self) -> Option<u64> {
        self.resources
            .iter()
            .filter_map(|point| point.open_fds)
            .max()
    }
}

#[derive(Debug, Default)]
struct Recorded {
    timeline: Timeline,
    http: (Latencies, u64),
    https: (Latencies, u64),
    floor: (Latencies, u64),
    starvation: Starvation,
}

/// Samples a server in the background until stopped.
#[derive(Debug)]
pub struct Sampler {
    origin: Instant,
    /// Held (shared) by each probe and sample while its request is out; [`Sampler::quiet`]
    /// takes it exclusively.
    gate: Arc<tokio::sync::RwLock<()>>,
    recorded: Arc<Mutex<Recorded>>,
    probing: Arc<Mutex<bool>>,
    tasks: Vec<JoinHandle<()>>,
    /// The bare responder the floor probes ask; `None` when it could not start.
    _floor: Option<crate::calibration::ProbeFloor>,
    origin_monotonic_ns: u64,
}

/// What a sampler collected.
#[derive(Debug, Clone)]
pub struct Sampled {
    /// The timeline.
    pub timeline: Timeline,
    /// Latencies of the probes counted in the storm (see [`Sampler::count_probes`]).
    pub probes: ProbeSummary,
    /// Run-queue waits over the run.
    pub starvation: Starvation,
    /// `CLOCK_MONOTONIC` ns at the run's origin, to place client aborts on the same axis.
    pub origin_monotonic_ns: u64,
}

impl Sampler {
    /// Starts probing `/healthz` over HTTP and HTTPS (trusting `tls`) every
    /// [`PROBE_INTERVAL`] and sampling live tasks and fds every [`RESOURCE_INTERVAL`]; times
    /// are relative to `origin`.
    pub fn start(endpoints: Endpoints, tls: ServerTls, origin: Instant) -> Self {
        let floor = crate::calibration::ProbeFloor::start().ok();
        let floor_addr = floor.as_ref().map(crate::calibration::ProbeFloor::addr);
        let origin_monotonic_ns = crate::history::monotonic_now_ns()
            .saturating_sub(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(0));
        let mut recorded = Recorded::default();
        recorded.starvation.cpus = std::thread::available_parallelism()
            .map_or(1, |cpus| u32::try_from(cpus.get()).unwrap_or(1));
        let recorded = Arc::new(Mutex::new(recorded));
        let probing = Arc::new(Mutex::new(false));
        let gate = Arc::new(tokio::sync::RwLock::new(()));
        let probe_task = {
            let recorded = Arc::clone(&recorded);
            let probing = Arc::clone(&probing);
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                // Dropped with this task, so stopping the sampler stops the probes in flight.
                let mut in_flight = tokio::task::JoinSet::new();
                let mut intended = Instant::now();
                loop {
                    tokio::time::sleep_until(intended).await;
                    let server = cpu::process(endpoints.pid);
                    let client = cpu::threads_of(std::process::id(), |name| {
                        !crate::calibration::is_floor_thread(name)
                    });
                    let at_ms = origin.elapsed().as_secs_f64() * 1000.0;
                    recorded.lock().starvation.record(at_ms, server, client);
                    while in_flight.try_join_next().is_some() {}
                    // While the sampler is quiet the probes of this slot are skipped, not delayed.
                    if let Ok(out) = Arc::clone(&gate).try_read_owned() {
                        let out = Arc::new(out);
                        let schemes = [
                            Some(Scheme::Http),
                            Some(Scheme::Https),
                            floor_addr.map(|_| Scheme::Floor),
                        ];
                        for scheme in schemes.into_iter().flatten() {
                            in_flight.spawn(probe(
                                endpoints,
                                floor_addr,
                                tls.clone(),
                                scheme,
                                intended,
                                origin,
                                Arc::clone(&out),
                                Arc::clone(&probing),
                                Arc::clone(&recorded),
                            ));
                        }
                    }
                    intended += PROBE_INTERVAL;
                }
            })
        };
        let resource_task = {
            let recorded = Arc::clone(&recorded);
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(RESOURCE_INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let _out = gate.read().await;
                    let at_ms = millis_since(origin);
                    let open_fds = endpoints.open_fds();
                    let asked = Instant::now();
                    let live_tasks = endpoints.live_tasks().await.ok();
                    let read_ms = live_tasks.map(|_| asked.elapsed().as_secs_f64() * 1000.0);
                    recorded.lock().timeline.resources.push(ResourcePoint {
                        at_ms,
                        live_tasks,
                        open_fds,
                        read_ms,
                    });
                }
            })
        };
        Self {
            origin,
            gate,
            recorded,
            probing,
            tasks: vec![probe_task, resource_task],
            _floor: floor,
            origin_monotonic_ns,
        }
    }

    /// Marks the start of a phase on the timeline.
    pub fn mark(&self, name: &str) {
        self.recorded.lock().timeline.phases.push(Phase {
            at_ms: millis_since(self.origin),
            name: name.to_owned(),
        });
    }

    /// Waits for the probe and sample in flight, if any, and holds off new ones until the
    /// guard drops: the server then serves no request of the sampler's while it is accounted.
    pub async fn quiet(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        Arc::clone(&self.gate).write_owned().await
    }

    /// Whether probe latencies count towards the storm's percentiles from now on.
    pub fn count_probes(&self, counted: bool) {
        *self.probing.lock() = counted;
    }

    /// Stops sampling and returns what was collected.
    pub fn stop(self) -> Sampled {
        for task in &self.tasks {
            task.abort();
        }
        let recorded = self.recorded.lock();
        let net = |scheme: Scheme| {
            let mut net = Latencies::default();
            for point in recorded
                .timeline
                .probes
                .iter()
                .filter(|point| point.scheme == scheme && point.counted)
            {
                let latency_ms = match point.latency_ms {
                    Some(latency) => {
                        let starved = recorded
                            .starvation
                            .between_ms(point.at_ms as f64, point.at_ms as f64 + latency);
                        (latency - starved).max(0.0)
                    }
                    None => PROBE_DEADLINE.as_secs_f64() * 1000.0,
                };
                net.record(Duration::from_secs_f64(latency_ms / 1000.0));
            }
            net
        };
        Sampled {
            timeline: recorded.timeline.clone(),
            probes: ProbeSummary {
                http: ProbeStats::of(&recorded.http.0, recorded.http.1, &net(Scheme::Http)),
                https: ProbeStats::of(&recorded.https.0, recorded.https.1, &net(Scheme::Https)),
                floor: ProbeStats::of(&recorded.floor.0, recorded.floor.1, &net(Scheme::Floor)),
            },
            starvation: recorded.starvation.clone(),
            origin_monotonic_ns: self.origin_monotonic_ns,
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One probe due at `intended`: its latency runs from then, however late it really left.
#[allow(clippy::too_many_arguments)]
async fn probe(
    endpoints: Endpoints,
    floor: Option<std::net::SocketAddr>,
    tls: ServerTls,
    scheme: Scheme,
    intended: Instant,
    origin: Instant,
    _out: Arc<tokio::sync::OwnedRwLockReadGuard<()>>,
    probing: Arc<Mutex<bool>>,
    recorded: Arc<Mutex<Recorded>>,
) {
    let answered = match scheme {
        Scheme::Http => endpoints.probe(PROBE_DEADLINE).await.map(drop),
        Scheme::Https => endpoints.probe_tls(&tls, PROBE_DEADLINE).await,
        Scheme::Floor => match floor {
            Some(floor) => crate::http::get(floor, "/healthz", &[], PROBE_DEADLINE)
                .await
                .map(drop)
                .map_err(|error| crate::error::Error::Endpoint {
                    path: "/healthz (probe floor)".into(),
                    message: error.to_string(),
                }),
            None => return,
        },
    };
    let latency = answered.ok().map(|()| intended.elapsed());
    let counted = *probing.lock();
    let mut recorded = recorded.lock();
    recorded.timeline.probes.push(ProbePoint {
        at_ms: u64::try_from(intended.saturating_duration_since(origin).as_millis())
            .unwrap_or(u64::MAX),
        scheme,
        latency_ms: latency.map(|latency| latency.as_secs_f64() * 1000.0),
        counted,
    });
    if counted {
        let (latencies, failures) = match scheme {
            Scheme::Http => &mut recorded.http,
            Scheme::Https => &mut recorded.https,
            Scheme::Floor => &mut recorded.floor,
        };
        match latency {
            Some(latency) => latencies.record(latency),
            None => {
                *failures += 1;
                latencies.record(PROBE_DEADLINE.max(intended.elapsed()));
            }
        }
    }
}

fn millis_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A steady reading of live tasks and open fds: several samples, the smallest of each, so a
/// probe in flight does not inflate the baseline.
pub async fn steady_reading(endpoints: &Endpoints, samples: usize) -> (Option<u64>, Option<u64>) {
    let mut live = None::<u64>;
    let mut fds = None::<u64>;
    for _ in 0..samples.max(1) {
        if let Ok(now) = endpoints.live_tasks().await {
            live = Some(live.map_or(now, |low| low.min(now)));
        }
        if let Some(now) = endpoints.open_fds() {
            fds = Some(fds.map_or(now, |low| low.min(now)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (live, fds)
}

/// Polls live tasks until they are at most `target`, for at most `bound`; returns how long it
/// took, or `None` if they never got there.
pub async fn wait_for_live_at_most(
    endpoints: &Endpoints,
    target: u64,
    bound: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < bound {
        if endpoints
            .live_tasks()
            .await
            .is_ok_and(|live| live <= target)
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_recorded_latencies() {
        let mut latencies = Latencies::default();
        assert_eq!(latencies.quantile_ms(0.99), None);
        for millis in 1..=100 {
            latencies.record(Duration::from_millis(millis));
        }
        assert_eq!(latencies.len(), 100);
        let p50 = latencies.quantile_ms(0.5).unwrap();
        let p99 = latencies.quantile_ms(0.99).unwrap();
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        assert!((98.0..=100.5).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn peaks_skip_missing_samples() {
        let timeline = Timeline {
            resources: vec![
                ResourcePoint {
                    at_ms: 0,
                    live_tasks: Some(3),
                    open_fds: None,
                    read_ms: None,
                },
                ResourcePoint {
                    at_ms: 1,
                    live_tasks: None,
                    open_fds: Some(40),
                    read_ms: None,
                },
                ResourcePoint {
                    at_ms: 2,
                    live_tasks: Some(9),
                    open_fds: Some(12),
                    read_ms: None,
                },
            ],
            ..Timeline::default()
        };
        assert_eq!(timeline.peak_live(), Some(9));
        assert_eq!(timeline.peak_fds(), Some(40));
    }

    #[test]
    fn starvation_is_the_longer_wait_per_cpu_interpolated_between_samples() {
        let waited = |server_ms: u64, client_ms: u64| {
            (
                Some(SchedTime {
                    on_cpu: Duration::ZERO,
                    waiting: Duration::from_millis(server_ms),
                }),
                Some(SchedTime {
                    on_cpu: Duration::ZERO,
                    waiting: Duration::from_millis(client_ms),
                }),
            )
        };
        let mut starvation = Starvation {
            cpus: 2,
            ..Starvation::default()
        };
        for (at_ms, (server, client)) in [
            (0.0, waited(0, 0)),
            (100.0, waited(200, 40)),
            (200.0, waited(200, 100)),
        ] {
            starvation.record(at_ms, server, client);
        }
        // The server waited 200 ms over the first 100 ms: 100 ms per CPU.
        assert!((starvation.between_ms(0.0, 100.0) - 100.0).abs() < 1e-9);
        // Half of that sample interval: half of it.
        assert!((starvation.between_ms(50.0, 100.0) - 50.0).abs() < 1e-9);
        // Then only the client waited (60 ms): 30 ms per CPU.
        assert!((starvation.between_ms(100.0, 200.0) - 30.0).abs() < 1e-9);
        // Past the last sample nothing more is known.
        assert_eq!(starvation.between_ms(200.0, 900.0), 0.0);
        assert_eq!(Starvation::default().between_ms(0.0, 10.0), 0.0);
    }
}

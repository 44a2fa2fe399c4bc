//! The HTTP service: the tower layer stack, request ids, and one handler per route.

use std::convert::Infallible;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use leakcheck::service::TasksService;

use crate::bugs::Bug;
use crate::config::Config;
use crate::deadline::{ArmedDeadline, ResponseDeadline};
use crate::debug::{CancellationLog, Stage};
use crate::metrics::Metrics;
use crate::upstream::{Upstream, UpstreamError};

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body of every route.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// The whole service as hyper drives it, per connection.
pub type AppService =
    BoxCloneSyncService<Request<hyper::body::Incoming>, Response<ResponseBody>, Infallible>;

/// Largest request body any route reads.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;
/// How often a request's lease keeper renews the request's lease.
pub const LEASE_RENEWAL_INTERVAL: Duration = Duration::from_millis(100);

/// `Retry-After` (seconds) of a /proxy 503 when the upstream pool is exhausted.
pub const POOL_RETRY_AFTER_SECONDS: &str = "1";

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Where a request came from; inserted into each request's extensions by the connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection's whole-response deadline, armed by streamed responses.
    pub deadline: ResponseDeadline,
}

/// The routes, for per-route task metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Route {
    Healthz,
    Work,
    Stream,
    Proxy,
    Slow,
    Panic,
    Debug,
    Metrics,
    NotFound,
}

impl Route {
    /// Every route, in metric order (the index is `route as usize`).
    pub const ALL: [Route; 9] = [
        Route::Healthz,
        Route::Work,
        Route::Stream,
        Route::Proxy,
        Route::Slow,
        Route::Panic,
        Route::Debug,
        Route::Metrics,
        Route::NotFound,
    ];

    /// The `route` label value.
    pub fn name(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Work => "work",
            Route::Stream => "stream",
            Route::Proxy => "proxy",
            Route::Slow => "slow",
            Route::Panic => "panic",
            Route::Debug => "debug",
            Route::Metrics => "metrics",
            Route::NotFound => "not_found",
        }
    }

    fn of(path: &str) -> Route {
        match path {
            "/healthz" => Route::Healthz,
            "/work" => Route::Work,
            "/stream" => Route::Stream,
            "/proxy" => Route::Proxy,
            "/slow" => Route::Slow,
            "/panic" => Route::Panic,
            "/metrics" => Route::Metrics,
            _ if path.starts_with("/debug/") => Route::Debug,
            _ => Route::NotFound,
        }
    }
}

/// State shared by every request.
#[derive(Debug)]
pub struct App {
    bugs: Vec<Bug>,
    /// Whole-response deadline of /stream; `None` with `no-stream-timeout`.
    stream_timeout: Option<Duration>,
    /// Upstream resolver and pool for /proxy.
    pub upstream: Arc<Upstream>,
    /// Counters and monitors for /metrics.
    pub metrics: Arc<Metrics>,
    /// Request-id drain times for /debug/cancellations.
    pub cancellations: Arc<CancellationLog>,
    /// The runtime's tracker, absent with `--tracking off`.
    pub tracker: Option<leakcheck::Tracker>,
    /// Whole-request deadline (to the response head) of every route but /debug/.
    request_timeout: Duration,
}

impl App {
    /// Shared state for a server running `config`.
    pub fn new(
        config: &Config,
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        cancellations: Arc<CancellationLog>,
        tracker: Option<leakcheck::Tracker>,
    ) -> Self {
        App {
            request_timeout: config.request_timeout,
            bugs: config.bugs.clone(),
            stream_timeout: (!config.has_bug(Bug::NoStreamTimeout))
                .then_some(config.stream_timeout),
            upstream,
            metrics,
            cancellations,
            tracker,
        }
    }

    fn has_bug(&self, bug: Bug) -> bool {
        self.bugs.contains(&bug)
    }
}

/// Request ids for requests that come without `x-request-id`: `req-<n>`.
#[derive(Debug, Clone, Default)]
struct SequentialRequestId(Arc<AtomicU64>);

impl MakeRequestId for SequentialRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("req-{n}"))
            .ok()
            .map(RequestId::new)
    }
}

/// Removes a client's `x-request-id` that leakcheck would not take as a label (empty, longer than
/// `leakcheck::service::MAX_LABEL_LEN` or not visible ASCII), so a fresh one is made: ids end up in
/// labels, spans and the bounded /debug/cancellations ring.
fn drop_unusable_request_id<B>(mut request: Request<B>) -> Request<B> {
    if request
        .headers()
        .get(X_REQUEST_ID)
        .is_some_and(|id| leakcheck::service::usable_label(id).is_none())
    {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    request
}

/// Builds the layered service: request id (taken or made, echoed back), a tracing span
/// carrying it, the request-id label on every task spawned under it, panics answered with 500
/// and the request-body deadline (408), around the router (which applies the whole-request
/// deadline itself, see `handle`).
pub fn service(app: Arc<App>, config: &Config) -> AppService {
    let router = tower::service_fn(move |request: Request<_>| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(handle(app, request).await) }
    });
    let stack = ServiceBuilder::new()
        .map_request(drop_unusable_request_id)
        .layer(SetRequestIdLayer::x_request_id(SequentialRequestId::default()))
        .layer(PropagateRequestIdLayer::x_request_id())
        // Every task spawned under a request (and their descendants) carries its id.
        .layer(leakcheck::service::RequestLabelLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|id| id.to_str().ok()).unwrap_or("");
            tracing::debug_span!("request", id, method = %request.method(), path = request.uri().path())
        }))
        .layer(CatchPanicLayer::custom(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error: the handler panicked\n")))
        .layer(RequestBodyTimeoutLayer::new(config.body_timeout))
        .service(router)
        .map_response(|response: Response<_>| response.map(|body| body.map_err(BoxError::from).boxed_unsync()));
    BoxCloneSyncService::new(stack)
}

/// Runs the route for `request`, instrumented by its route's task monitor (the request label
/// layer has labeled it already), under the whole-request deadline: 503 with an empty body when
/// the response head is not ready in time. /debug/ routes (loopback-only, for an operator) have
/// none: a process's first /debug/tasks loads its debug info to symbolize, which can take longer.
async fn handle<B>(app: Arc<App>, request: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let route = Route::of(request.uri().path());
    let request_id: Arc<str> = request
        .headers()
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .unwrap_or("")
        .into();
    let monitor = app.metrics.route(route).clone();
    let in_flight = InFlight::enter(&app, Arc::clone(&request_id));
    let deadline = app.request_timeout;
    let response = monitor.instrument(dispatch(app, route, request, request_id, in_flight));
    if route == Route::Debug {
        return response.await;
    }
    match tokio::time::timeout(deadline, response).await {
        Ok(response) => response,
        Err(_) => with_body(StatusCode::SERVICE_UNAVAILABLE, "text/plain", Bytes::new()),
    }
}

/// A request from its head until its response ends: dropped with the handler, or with the
/// streamed body for /stream. On drop it leaves the in-flight gauge and logs the request's
/// end in /debug/cancellations (a client abort drops it at once).
#[derive(Debug)]
struct InFlight {
    metrics: Arc<Metrics>,
    cancellations: Arc<CancellationLog>,
    request_id: Arc<str>,
}

impl InFlight {
    fn enter(app: &App, request_id: Arc<str>) -> Self {
        app.metrics.requests_in_flight.enter();
        InFlight {
            metrics: Arc::clone(&app.metrics),
            cancellations: Arc::clone(&app.cancellations),
            request_id,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.requests_in_flight.leave();
        self.cancellations
            .record(&self.request_id, Stage::RequestEnded);
    }
}

async fn dispatch<B>(
    app: Arc<App>,
    route: Route,
    request: Request<B>,
    request_id: Arc<str>,
    in_flight: InFlight,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let query = Query(request.uri().query().unwrap_or("").to_owned());
    let path = request.uri().path().to_owned();
    let connection = request.extensions().get::<ConnectionInfo>().cloned();
    let peer = connection.as_ref().map(|info| info.peer);
    if let Err(response) = read_body(request.into_body()).await {
        return response;
    }
    let outcome = match route {
        Route::Healthz => Ok(plain(StatusCode::OK, "ok\n")),
        Route::Work => work(&app, &query, &request_id).await,
        Route::Stream => stream(&app, &query, connection.as_ref(), in_flight),
        Route::Proxy => proxy(&app, &query).await,
        Route::Slow => slow(&query).await,
        Route::Panic => panic_route(&app, &query).await,
        Route::Metrics => Ok(metrics(&app)),
        Route::Debug if !debug_allowed(peer) => Ok(plain(
            StatusCode::FORBIDDEN,
            "debug endpoints are served to loopback clients only\n",
        )),
        Route::Debug => Ok(debug_route(&app, &path).await),
        Route::NotFound => Ok(plain(
            StatusCode::NOT_FOUND,
            "no such route; try /healthz /work /stream /proxy /slow /panic /metrics /debug/tasks\n",
        )),
    };
    outcome.unwrap_or_else(|bad_query| plain(StatusCode::BAD_REQUEST, &bad_query))
}

/// Debug endpoints expose task stacks and request ids: loopback peers only (an unknown peer is refused).
fn debug_allowed(peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|peer| peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback())
}

/// Reads (and discards) the request body: bounded in size here and in time by the body-timeout layer.
async fn read_body<B>(body: B) -> Result<(), Response<ResponseBody>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(_) => Ok(()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over {MAX_REQUEST_BODY} bytes\n"),
        )),
        Err(error) if error.is::<tower_http::timeout::TimeoutError>() => Err(plain(
            StatusCode::REQUEST_TIMEOUT,
            "request body deadline exceeded\n",
        )),
        Err(error) => Err(plain(
            StatusCode::BAD_REQUEST,
            &format!("cannot read request body: {error}\n"),
        )),
    }
}

/// A response with a text body.
pub fn plain(status: StatusCode, text: &str) -> Response<ResponseBody> {
    with_body(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(text.as_bytes()),
    )
}

fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(body: String) -> Response<ResponseBody> {
    with_body(StatusCode::OK, "application/json", Bytes::from(body))
}

/// The query string, parsed on demand; a bad value is answered with 400 and this message.
struct Query(String);

impl Query {
    fn number(&self, name: &str, default: u64, max: u64) -> Result<u64, String> {
        let raw = self
            .0
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value);
        match raw {
            None => Ok(default),
            Some(raw) => match raw.parse::<u64>() {
                Ok(value) if value <= max => Ok(value),
                _ => Err(format!(
                    "query parameter `{name}={raw}` must be a whole number from 0 to {max}\n"
                )),
            },
        }
    }
}

/// The background tasks of one request (lease keeper, stream producer): they are aborted
/// when the scope drops, i.e. when the handler or the streamed body is dropped, which is
/// what a client abort, a deadline or the end of the response does.
#[derive(Debug, Default)]
struct RequestScope {
    tasks: JoinSet<()>,
}

impl RequestScope {
    #[track_caller]
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }
}

/// Renews the request's lease until the request's scope aborts it.
async fn keep_lease(metrics: Arc<Metrics>) {
    let mut ticker = tokio::time::interval(LEASE_RENEWAL_INTERVAL);
    loop {
        ticker.tick().await;
        metrics.lease_renewals.inc();
    }
}

/// Starts the request's lease keeper: in its scope, or detached when `detached-request-task` is seeded.
#[track_caller]
fn start_lease_keeper(app: &App, scope: &mut RequestScope) {
    let keeper = keep_lease(Arc::clone(&app.metrics));
    if app.has_bug(Bug::DetachedRequestTask) {
        tokio::spawn(keeper);
    } else {
        scope.spawn(keeper);
    }
}

/// Rounds of `crunch` between two yields to the scheduler.
pub const CRUNCH_ROUNDS_PER_YIELD: u64 = 1024;

/// A CPU-bound step so /work is real work, not only scheduling. It yields every
/// [`CRUNCH_ROUNDS_PER_YIELD`] rounds: an aborted child stops at its next yield instead of
/// holding a worker thread until its loop ends.
async fn crunch(seed: u64, rounds: u64) -> u64 {
    let mut hasher = DefaultHasher::new();
    let mut value = seed;
    for round in 0..rounds {
        (value, round).hash(&mut hasher);
        value = hasher.finish();
        if round % CRUNCH_ROUNDS_PER_YIELD == CRUNCH_ROUNDS_PER_YIELD - 1 {
            tokio::task::yield_now().await;
        }
    }
    value
}

/// `/work?children=N&rounds=R&ms=M`: N child tasks each crunch R rounds and sleep M ms; the sum is returned.
async fn work(
    app: &App,
    query: &Query,
    request_id: &str,
) -> Result<Response<ResponseBody>, String> {
    let children = query.number("children", 4, 64)?;
    let rounds = query.number("rounds", 64, 1_000_000_000)?;
    let pause = Duration::from_millis(query.number("ms", 0, 60_000)?);
    let mut scope = RequestScope::default();
    start_lease_keeper(app, &mut scope);
    // Dropping `workers` (deadline, client abort) aborts the children.
    let mut workers = JoinSet::new();
    for child in 0..children {
        workers.spawn(async move {
            let value = crunch(child, rounds).await;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            value
        });
    }
    let mut sum = 0u64;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(value) => sum = sum.wrapping_add(value),
            Err(error) => return Ok(child_failed(app, &error)),
        }
    }
    let body = serde_json::json!({ "request_id": request_id, "children": children, "result": sum });
    Ok(json(body.to_string()))
}

fn child_failed(app: &App, error: &JoinError) -> Response<ResponseBody> {
    if error.is_panic() {
        app.metrics.child_panics.inc();
        plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: a child task panicked\n",
        )
    } else {
        plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: a child task was cancelled\n",
        )
    }
}

/// A chunked body fed by the request's producer task; it owns the request's scope, so
/// dropping the body (end of response or client abort) ends the producer and lease keeper.
struct ChunkStream {
    chunks: mpsc::Receiver<Bytes>,
    _in_flight: InFlight,
    _scope: RequestScope,
    /// The connection's response deadline, disarmed when the body ends or is dropped.
    _deadline: Option<ArmedDeadline>,
}

impl Body for ChunkStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// `/stream?chunks=N&interval_ms=M&size=B`: N chunks of B bytes, one every M ms, within the
/// whole-response deadline (the connection is closed when it passes).
fn stream(
    app: &App,
    query: &Query,
    connection: Option<&ConnectionInfo>,
    in_flight: InFlight,
) -> Result<Response<ResponseBody>, String> {
    let chunks = query.number("chunks", 2_000, 10_000_000)?;
    let interval = Duration::from_millis(query.number("interval_ms", 5, 60_000)?.max(1));
    let size = query.number("size", 8 * 1024, 1024 * 1024)? as usize;
    let mut scope = RequestScope::default();
    start_lease_keeper(app, &mut scope);
    let (sender, receiver) = mpsc::channel(4);
    let chunk = Bytes::from(vec![b'x'; size]);
    scope.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        for _ in 0..chunks {
            ticker.tick().await;
            if sender.send(chunk.clone()).await.is_err() {
                return;
            }
        }
    });
    let deadline = app
        .stream_timeout
        .zip(connection)
        .map(|(limit, connection)| connection.deadline.arm(tokio::time::Instant::now() + limit));
    let body = ChunkStream {
        chunks: receiver,
        _in_flight: in_flight,
        _scope: scope,
        _deadline: deadline,
    };
    let mut response = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// `/proxy?path=/x`: GET the upstream's `path` by name (hickory) over a pooled connection.
async fn proxy(app: &App, query: &Query) -> Result<Response<ResponseBody>, String> {
    let path = query
        .0
        .split('&')
        .find_map(|pair| pair.strip_prefix("path="))
        .unwrap_or("/");
    if !path.starts_with('/') || path.contains(['#', ' ']) {
        return Err(format!(
            "query parameter `path={path}` must be an absolute path like /status\n"
        ));
    }
    Ok(match app.upstream.get(path).await {
        Ok((status, body)) => {
            let mut response = with_body(StatusCode::OK, "application/octet-stream", body);
            if let Ok(value) = HeaderValue::from_str(status.as_str()) {
                response.headers_mut().insert("x-upstream-status", value);
            }
            response
        }
        Err(error) => {
            let mut response = plain(error.status(), &format!("{error}\n"));
            if matches!(error, UpstreamError::PoolExhausted) {
                // Shed load tells the client when to come back instead of leaving it to guess.
                response.headers_mut().insert(
                    RETRY_AFTER,
                    HeaderValue::from_static(POOL_RETRY_AFTER_SECONDS),
                );
            }
            response
        }
    })
}

/// `/slow?ms=M`: answers after M ms (default 1000), within the whole-request deadline.
async fn slow(query: &Query) -> Result<Response<ResponseBody>, String> {
    let pause = query.number("ms", 1_000, 3_600_000)?;
    tokio::time::sleep(Duration::from_millis(pause)).await;
    Ok(plain(StatusCode::OK, "slow ok\n"))
}

/// `/panic` panics in the handler (CatchPanicLayer answers 500); `/panic?child=1` panics in a child task.
async fn panic_route(app: &App, query: &Query) -> Result<Response<ResponseBody>, String> {
    if query.number("child", 0, 1)? == 0 {
        panic!("/panic was requested");
    }
    let mut scope = RequestScope::default();
    start_lease_keeper(app, &mut scope);
    let (answers, mut answer) = mpsc::channel::<u64>(1);
    let mut children = JoinSet::new();
    let reply = answers.clone();
    children.spawn(async move {
        let value = crunch(1, 8).await;
        if value != 0 {
            panic!("/panic?child=1: the child hit a bad value");
        }
        let _ = reply.send(value).await;
    });
    let answer = if app.has_bug(Bug::UncaughtPanicInChild) {
        // Only the answer channel is watched; `answers` stays open for more children.
        answer.recv().await
    } else {
        tokio::select! {
            answer = answer.recv() => answer,
            Some(Err(error)) = children.join_next() => return Ok(child_failed(app, &error)),
        }
    };
    drop(answers);
    Ok(plain(
        StatusCode::OK,
        &format!("child answered {answer:?}\n"),
    ))
}

fn metrics(app: &App) -> Response<ResponseBody> {
    let idle = app.upstream.idle_connections();
    let text = app
        .metrics
        .render(app.tracker.as_ref(), idle, &app.cancellations.propagation);
    with_body(
        StatusCode::OK,
        crate::metrics::CONTENT_TYPE,
        Bytes::from(text),
    )
}

async fn debug_route(app: &App, path: &str) -> Response<ResponseBody> {
    match path {
        "/debug/tasks" => match &app.tracker {
            Some(tracker) => {
                let Ok(reply) = TasksService::new(tracker.clone())
                    .oneshot(Request::new(()))
                    .await;
                reply.map(|body| {
                    Full::new(Bytes::from(body))
                        .map_err(|never| match never {})
                        .boxed_unsync()
                })
            }
            None => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "task tracking is off (--tracking off)\n",
            ),
        },
        "/debug/cancellations" => json(app.cancellations.to_json()),
        // leakcheck's dump, not `Handle::dump`: it refuses where tokio 1.54's
        // dump would wedge the runtime, and says why.
        "/debug/dump" => match &app.tracker {
            Some(tracker) => match tracker.task_dump().await {
                Ok(text) => with_body(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    Bytes::from(text),
                ),
                Err(reason) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{reason}; use /debug/tasks\n"),
                ),
            },
            None => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "task tracking is off (--tracking off); the task dump is taken through it\n",
            ),
        },
        _ => plain(
            StatusCode::NOT_FOUND,
            "debug endpoints: /debug/tasks /debug/dump /debug/cancellations\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_endpoints_are_for_loopback_peers_only() {
        for allowed in [
            "127.0.0.1:1",
            "127.9.9.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(debug_allowed(Some(allowed.parse().unwrap())), "{allowed}");
        }
        for refused in [
            "10.0.0.1:1",
            "192.168.1.2:1",
            "[2001:db8::1]:1",
            "[::ffff:10.0.0.1]:1",
        ] {
            assert!(!debug_allowed(Some(refused.parse().unwrap())), "{refused}");
        }
        assert!(!debug_allowed(None));
    }

    #[test]
    fn query_numbers_are_bounded() {
        let query = Query("children=3&ms=70000&x".to_owned());
        assert_eq!(query.number("children", 4, 64), Ok(3));
        assert_eq!(query.number("rounds", 64, 100), Ok(64));
        assert!(
            query
                .number("ms", 0, 60_000)
                .unwrap_err()
                .contains("from 0 to 60000")
        );
    }
}

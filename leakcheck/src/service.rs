//! Tower middleware that gives a hyper or axum service the visibility the
//! reference server has (feature `tower`; the server uses both):
//!
//! - [`RequestLabelLayer`] runs each request's handler inside
//!   [`labeled`] with the request's id, taken from a header
//!   (`x-request-id` by default, as tower-http's `SetRequestIdLayer` sets it),
//!   so every task spawned while handling it — and every task those spawn —
//!   carries the id in reports and snapshots: a leaked task names the request
//!   that left it behind.
//! - [`TasksService`] answers any request with a [`Snapshot`](crate::Snapshot)
//!   of the tracker's live tasks as JSON, symbolized on a blocking thread (the
//!   first symbolization in a process loads debug info, ~0.1–1 s, which must
//!   not stall a worker). Mount it on an admin listener, never a public one:
//!   spawn sites and backtraces describe the program.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};

use crate::{Labeled, Tracker, labeled};

/// Longest header value taken as a label: a client that sends a longer id
/// (or one that is not visible ASCII) gets no label rather than a label
/// that costs memory in every task record it reaches.
pub const MAX_LABEL_LEN: usize = 128;

/// A [`tower_layer::Layer`] that labels the tasks spawned under each request
/// with the value of one of its headers; see the [module docs](self).
///
/// ```
/// # use leakcheck::service::RequestLabelLayer;
/// // After tower-http's SetRequestIdLayer, so every request has an id.
/// let layer = RequestLabelLayer::x_request_id();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct RequestLabelLayer {
    header: HeaderName,
}

impl RequestLabelLayer {
    /// Labels with the value of `header`.
    pub fn new(header: HeaderName) -> Self {
        RequestLabelLayer { header }
    }

    /// Labels with the value of `x-request-id`.
    pub fn x_request_id() -> Self {
        RequestLabelLayer::new(HeaderName::from_static("x-request-id"))
    }
}

impl<S> tower_layer::Layer<S> for RequestLabelLayer {
    type Service = RequestLabel<S>;

    fn layer(&self, inner: S) -> RequestLabel<S> {
        RequestLabel {
            inner,
            header: self.header.clone(),
        }
    }
}

/// The service [`RequestLabelLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequestLabel<S> {
    inner: S,
    header: HeaderName,
}

impl<S, B> tower_service::Service<Request<B>> for RequestLabel<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestLabelFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let label = request
            .headers()
            .get(&self.header)
            .and_then(usable_label)
            .map(Arc::<str>::from);
        let future = self.inner.call(request);
        RequestLabelFuture {
            inner: match label {
                Some(label) => Inner::Labeled {
                    future: labeled(label, future),
                },
                None => Inner::Plain { future },
            },
        }
    }
}

/// `value` as a label, if it is fit to be one: non-empty visible ASCII, at
/// most [`MAX_LABEL_LEN`] bytes. A service that makes its own request ids can
/// use it to replace a client's unusable one.
pub fn usable_label(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= MAX_LABEL_LEN && text.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(text)
}

pin_project_lite::pin_project! {
    /// The future of [`RequestLabel`]: the inner service's, labeled when the
    /// request had a usable id.
    pub struct RequestLabelFuture<F> {
        #[pin]
        inner: Inner<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProjection]
    enum Inner<F> {
        Labeled { #[pin] future: Labeled<F> },
        Plain { #[pin] future: F },
    }
}

impl<F: Future> Future for RequestLabelFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project().inner.project() {
            InnerProjection::Labeled { future } => future.poll(cx),
            InnerProjection::Plain { future } => future.poll(cx),
        }
    }
}

/// A [`tower_service::Service`] that answers every request with the
/// tracker's live tasks as a [`Snapshot`](crate::Snapshot) JSON document;
/// see the [module docs](self).
#[derive(Clone)]
pub struct TasksService {
    tracker: Tracker,
}

impl TasksService {
    /// Serves `tracker`'s live tasks.
    pub fn new(tracker: Tracker) -> Self {
        TasksService { tracker }
    }
}

impl std::fmt::Debug for TasksService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TasksService").finish_non_exhaustive()
    }
}

impl<B> tower_service::Service<Request<B>> for TasksService {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let tracker = self.tracker.clone();
        Box::pin(async move {
            let json = tokio::task::spawn_blocking(move || {
                serde_json::to_string_pretty(&tracker.snapshot())
            })
            .await;
            let (status, body) = match json {
                Ok(Ok(json)) => (StatusCode::OK, json),
                Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
                Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
            };
            let content_type = if status == StatusCode::OK {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            Ok(Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, content_type)
                .body(body)
                .expect("a status, a static header and a String body make a response"))
        })
    }
}

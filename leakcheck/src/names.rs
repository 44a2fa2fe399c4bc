//! Task names (`tokio::task::Builder::name`) for reports. tokio's task hooks
//! do not pass them (its `TaskMeta` holds an id, a spawn location and a
//! schedule latency, nothing else), but with tokio's `tracing` feature — which
//! `Builder::name` needs anyway — every spawn opens a `runtime.spawn` span
//! carrying `task.id` and `task.name`. [`TaskNames`], a `tracing-subscriber`
//! layer, reads them into a table that reports consult for leaked tasks only;
//! without the layer, reports simply have no names.

#[cfg(feature = "task-names")]
use std::sync::OnceLock;

#[cfg(feature = "task-names")]
use parking_lot::Mutex;
#[cfg(feature = "task-names")]
use rustc_hash::FxHashMap;

/// Names of live named tasks, by task id.
#[cfg(feature = "task-names")]
fn table() -> &'static Mutex<FxHashMap<u64, Box<str>>> {
    static TABLE: OnceLock<Mutex<FxHashMap<u64, Box<str>>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// The name task `id` was spawned with, if a [`TaskNames`] layer saw it.
#[cfg(feature = "task-names")]
pub(crate) fn name_of(id: u64) -> Option<String> {
    table().lock().get(&id).map(|name| name.to_string())
}

/// Without the layer no name is known.
#[cfg(not(feature = "task-names"))]
pub(crate) fn name_of(_id: u64) -> Option<String> {
    None
}

/// A `tracing-subscriber` layer that gives leak reports and snapshots the
/// names tasks were spawned with (`tokio::task::Builder::new().name(…)`).
///
/// Needs tokio's `tracing` feature and `--cfg tokio_unstable` (as
/// `Builder::name` does), and the `tokio::task` target enabled at `TRACE`
/// level in any filter in front of it. Unnamed spawns cost it nothing beyond
/// the span tokio already makes.
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt;
/// let subscriber = tracing_subscriber::registry().with(leakcheck::TaskNames);
/// tracing::subscriber::set_global_default(subscriber).unwrap();
/// ```
#[cfg(feature = "task-names")]
#[cfg_attr(docsrs, doc(cfg(feature = "task-names")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskNames;

/// The task a `runtime.spawn` span belongs to, kept in the span's extensions
/// so its close forgets the name.
#[cfg(feature = "task-names")]
struct NamedTask(u64);

#[cfg(feature = "task-names")]
impl<S> tracing_subscriber::Layer<S> for TaskNames
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let metadata = attrs.metadata();
        if metadata.name() != "runtime.spawn" || !metadata.target().starts_with("tokio::task") {
            return;
        }
        let mut fields = SpawnFields::default();
        attrs.record(&mut fields);
        let (Some(task), Some(name)) = (fields.id, fields.name.filter(|n| !n.is_empty())) else {
            return;
        };
        table().lock().insert(task, name.into_boxed_str());
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(NamedTask(task));
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if let Some(NamedTask(task)) = span.extensions().get::<NamedTask>() {
            table().lock().remove(task);
        }
    }
}

/// `task.id` and `task.name` of a `runtime.spawn` span.
#[cfg(feature = "task-names")]
#[derive(Default)]
struct SpawnFields {
    id: Option<u64>,
    name: Option<String>,
}

#[cfg(feature = "task-names")]
impl tracing::field::Visit for SpawnFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "task.id" {
            self.id = Some(value);
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "task.name" {
            self.name = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        // tokio records the name with `%`: its Debug is the name's Display.
        if field.name() == "task.name" {
            self.name = Some(format!("{value:?}"));
        }
    }
}

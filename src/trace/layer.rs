//! The `tracing` side of the timeline: npushim's own layer, and the `tracing-chrome` sink.
//!
//! Each call emits one `tracing` event with typed fields. [`NativeLayer`] stores its field
//! values by index straight into a slot of the calling thread's ring (the writer decodes
//! them): no allocation, no formatting, no lock, no copy. The subscriber lives in this library's own copy of
//! `tracing`, so it never meets a host program's subscriber.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber, span};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use super::record::{Shape, tag_shape, units_for};
use super::{Settings, writer};
use crate::sync::FlagLock;

/// The metadata of the callsites whose events are calls, one per [`Shape`] (each checked
/// field by field once, when `tracing` registers it).
static CALL_CALLSITES: [AtomicPtr<Metadata<'static>>; 4] =
    [const { AtomicPtr::new(ptr::null_mut()) }; 4];

/// npushim's layer: `tracing` event → fixed-size record → per-thread ring.
pub struct NativeLayer;

/// Stores a call event's field values by field index (straight into a ring slot).
struct FieldValues<'a>(&'a mut [u128]);

impl Visit for FieldValues<'_> {
    #[inline]
    fn record_u128(&mut self, field: &Field, value: u128) {
        if let Some(slot) = self.0.get_mut(field.index()) {
            *slot = value;
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

/// The shape of a call event's callsite (its name and exactly its fields, in order).
fn call_shape(meta: &Metadata<'_>) -> Option<Shape> {
    if meta.target() != "npushim::call" {
        return None;
    }
    let hccl = match meta.name() {
        "aclrtMemcpyAsync" => false,
        "HcclMemcpyAsync" => true,
        _ => return None,
    };
    Shape::ALL.into_iter().find(|shape| {
        matches!(shape, Shape::Hccl | Shape::HcclFault) == hccl
            && meta.fields().len() == shape.fields().len()
            && meta
                .fields()
                .iter()
                .zip(shape.fields())
                .all(|(f, n)| f.name() == *n)
    })
}

impl NativeLayer {
    fn register(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if let Some(shape) = call_shape(meta) {
            CALL_CALLSITES[shape as usize].store(meta as *const _ as *mut _, Ordering::Release);
        }
        tracing::subscriber::Interest::always()
    }

    #[inline]
    fn record(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let known = Shape::ALL.into_iter().find(|s| {
            ptr::eq(
                meta as *const Metadata<'static>,
                CALL_CALLSITES[*s as usize].load(Ordering::Relaxed),
            )
        });
        // `tracing` lets an event through while another thread is still registering its
        // callsite (with `Interest::sometimes`), possibly before `register_callsite` has
        // run here: identify such an event by its metadata instead of losing it.
        let Some(shape) = known.or_else(|| call_shape(meta)) else {
            return;
        };
        super::push_with(units_for(shape), |slot| {
            event.record(&mut FieldValues(slot));
            tag_shape(slot, shape);
        });
    }
}

/// As a layer, npushim's recorder composes with any other subscriber.
impl<S: Subscriber> Layer<S> for NativeLayer {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        self.register(meta)
    }

    #[inline]
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        self.record(event);
    }
}

/// Installed on its own, it is the whole subscriber: the shim records no spans, so it needs
/// none of a registry's span bookkeeping nor `Layered`'s per-event filter state (together
/// about 60 instructions per event for nothing).
impl Subscriber for NativeLayer {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        self.register(meta)
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    #[inline]
    fn event(&self, event: &Event<'_>) {
        NativeLayer::record(self, event);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// Installs the native recorder as this library's global `tracing` dispatcher (once).
pub fn install_native() {
    let _ = tracing::subscriber::set_global_default(NativeLayer);
}

/// `tracing-chrome`'s flush guard, dropped at exit so its writer thread finishes the file.
static CHROME_GUARD: FlagLock<Option<tracing_chrome::FlushGuard>> = FlagLock::new(None);

/// Starts the `tracing-chrome` sink on a file we create (so naming and symlink rules hold).
pub fn start_chrome(settings: &Settings) -> bool {
    let Some(path) = writer::create_file(settings, &writer::hostname()) else {
        return false;
    };
    let (fd, name) = path;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new()
        .writer(file)
        .include_args(true)
        .build();
    let subscriber = tracing_subscriber::registry().with(layer);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        crate::diag::warn!("cannot install the tracing-chrome sink; tracing is off");
        return false;
    }
    if let Some(mut g) = CHROME_GUARD.try_lock() {
        *g = Some(guard);
    }
    crate::diag::info!("tracing to {name} (tracing-chrome sink)");
    true
}

/// Flushes and closes the `tracing-chrome` file.
pub fn finish_chrome() {
    if let Some(mut g) = CHROME_GUARD.lock_for(std::time::Duration::from_secs(2)) {
        drop(g.take());
    }
}

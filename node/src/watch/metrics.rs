//! What event delivery observes, for `/metrics`. Carried by the
//! [`Hub`](super::Hub), which every feed of this node reaches.

use prometheus::{Histogram, HistogramOpts, Registry};

#[derive(Clone)]
pub struct WatchMetrics {
    /// From an event being applied (and published) on this node to a watch
    /// stream taking it; live events only, not those read from the history.
    pub delivery_lag_seconds: Histogram,
}

impl WatchMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            delivery_lag_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "baton_watch_delivery_lag_seconds",
                    "Event delivery lag: from an event being applied on this node to a watch stream taking it (live events, not history catch-up).",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 4.0, 9)?),
            )?,
        })
    }

    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.delivery_lag_seconds.clone()))
    }
}

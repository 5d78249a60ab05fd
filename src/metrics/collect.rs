//! The collector: reads the shared slots at scrape time into prometheus-client's constant
//! metrics, which its encoder writes out.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::region::{self, Region};

/// heird's metrics, read from a [`Region`] at each scrape.
#[derive(Debug)]
pub(super) struct Shared(pub(super) fn() -> &'static Region);

/// The counters: (name without `_total`, slot, help).
const COUNTERS: [(&str, usize, &str); 6] = [
    (
        "heird_requests",
        region::REQUESTS,
        "HTTP requests routed to the app, by every process of the service",
    ),
    (
        "heird_handoffs_started",
        region::HANDOFFS_STARTED,
        "Handoffs started: a successor was spawned",
    ),
    (
        "heird_handoffs_succeeded",
        region::HANDOFFS_SUCCEEDED,
        "Handoffs whose successor took over",
    ),
    (
        "heird_handoffs_failed",
        region::HANDOFFS_FAILED,
        "Handoffs whose successor failed; the old process served on",
    ),
    (
        "heird_connections_moved",
        region::CONNECTIONS_MOVED,
        "Idle keep-alive connections moved to a successor or into the fd store",
    ),
    (
        "heird_websockets_moved",
        region::WEBSOCKETS_MOVED,
        "WebSockets moved with their state to a successor or into the fd store",
    ),
];

impl Collector for Shared {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let r = (self.0)();
        for (name, slot, help) in COUNTERS {
            let c = ConstCounter::new(r.get(slot));
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        gauge(
            &mut encoder,
            "heird_open_connections",
            "Connections open now, in every process of the service",
            r.open_connections(),
        )?;
        gauge(
            &mut encoder,
            "heird_generation",
            "The primary process's generation: 1 at a start, one more at each handoff",
            r.get(region::GENERATION) as i64,
        )?;
        gauge(
            &mut encoder,
            "heird_primary_start_time_seconds",
            "When the primary process started, in seconds since the Unix epoch",
            r.get(region::PRIMARY_START_MS) as f64 / 1000.0,
        )?;
        let h = DrainHistogram::read(r);
        h.encode(encoder.encode_descriptor(
            "heird_drain_duration_seconds",
            "How long drains took, from the drain's start until its last connection was gone \
             (or its deadline); the count is the number of drains",
            None,
            h.metric_type(),
        )?)
    }
}

fn gauge<N: EncodeGaugeValue>(e: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// The drain durations, as read at one scrape.
struct DrainHistogram {
    sum: f64,
    count: u64,
    /// (upper bound, drains in that bucket alone): the encoder adds them up.
    buckets: Vec<(f64, u64)>,
}

impl DrainHistogram {
    fn read(r: &Region) -> DrainHistogram {
        let bounds = region::DRAIN_BOUNDS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .enumerate()
            .map(|(i, b)| (b, r.get(region::DRAIN_BUCKETS + i)))
            .collect();
        DrainHistogram {
            sum: r.get(region::DRAIN_MICROS) as f64 / 1e6,
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

impl EncodeMetric for DrainHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

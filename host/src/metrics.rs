//! Counters and a latency histogram, rendered as Prometheus text on `/metrics`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the hub-call duration buckets.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    5.0,
];

/// A histogram with fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

/// The server's own counters (the backplane keeps its own).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages (records) received from clients.
    pub messages_in: AtomicU64,
    /// Hub calls made (invocations and lifecycle events).
    pub hub_calls: AtomicU64,
    /// Calls that trapped (panics, `unreachable`, misuse of imports).
    pub traps: AtomicU64,
    /// Calls stopped at their deadline.
    pub deadline_hits: AtomicU64,
    /// Calls stopped at their memory cap.
    pub memory_hits: AtomicU64,
    /// Invocations refused by the per-connection rate limit.
    pub rate_limited: AtomicU64,
    /// Stateful reconnect: connections resumed on a new WebSocket of this host.
    pub resumes: AtomicU64,
    /// WebSockets presenting a connection token this host does not hold (a resume after the
    /// window, or to another host).
    pub resumes_refused: AtomicU64,
    /// Stateful reconnect: connections that moved here from another server, and away.
    pub moves_in: AtomicU64,
    pub moves_out: AtomicU64,
    /// Stateful reconnect: messages sent again on resumes.
    pub replayed_messages: AtomicU64,
    /// Durable reconnect: connections taken over here after their server stopped answering,
    /// and the frames made again from the hubs' logs for them.
    pub durable_resumes: AtomicU64,
    pub durable_replayed_from_log: AtomicU64,
    /// Durable reconnect: checkpoints written, and record writes that failed (what they would
    /// have kept is not safe from a crash of this server).
    pub durable_checkpoints: AtomicU64,
    pub durable_write_failures: AtomicU64,
    /// Stateful reconnect: bytes of messages kept until their clients acknowledge them.
    pub reconnect_buffer_bytes: AtomicU64,
    /// Duration of hub calls.
    pub call_duration: Histogram,
    /// Open connections per transport (`WebSockets`, `ServerSentEvents`, `LongPolling`).
    pub transports: Tally,
    /// Open connections per hub protocol (`json`, `messagepack`).
    pub protocols: Tally,
}

/// A gauge per label value, for the few values a label has (transports, protocols). Changes
/// come once per connection, so a lock is cheap enough.
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<Vec<(&'static str, u64)>>,
}

impl Tally {
    pub fn add(&self, label: &'static str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }

    pub fn remove(&self, label: &'static str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = counts.iter_mut().find(|(l, _)| *l == label) {
            *n = n.saturating_sub(1);
        }
    }

    /// Every label value seen, sorted, with its count (zeros included: a value that was seen
    /// stays on the page).
    pub fn samples(&self) -> Vec<(String, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut samples: Vec<_> = counts.iter().map(|(l, n)| ((*l).to_owned(), *n)).collect();
        samples.sort();
        samples
    }
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Takes `n` off a gauge.
    pub fn sub(gauge: &AtomicU64, n: usize) {
        gauge.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

/// Writes Prometheus text.
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self { out: String::new() }
    }

    pub fn metric(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }

    /// One metric with a label, one sample per (label value, value).
    pub fn labelled(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        samples: &[(String, u64)],
    ) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (value_of_label, value) in samples {
            let escaped = value_of_label.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(self.out, "{name}{{{label}=\"{escaped}\"}} {value}");
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        histogram.render(&mut self.out, name, help);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut e = Exposition::new();
        e.histogram("x", "help", &h);
        let text = e.finish();
        assert!(text.contains("x_bucket{le=\"0.00005\"} 1\n"));
        assert!(text.contains("x_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("x_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("x_count 3\n"));
    }
}

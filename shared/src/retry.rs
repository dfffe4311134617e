//! Exponential backoff with equal jitter, and deadlines that leave room to report.

use std::time::Duration;

// Tokio's clock, so tests with a paused clock see deadlines pass.
use tokio::time::Instant;

/// Delays that double from `base` up to `cap`, each drawn uniformly between half the current
/// ceiling and the ceiling ("equal jitter": never a near-zero wait, yet retrying clients spread
/// out instead of hammering in step).
#[derive(Debug, Clone)]
pub struct Backoff {
    ceiling: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { ceiling: base, cap }
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.cap);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(fastrand::u64(millis / 2..=millis))
    }
}

/// The time an invocation may still spend, leaving a reserve to write its response.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    pub fn at(at: Instant) -> Self {
        Self { at }
    }

    pub fn after(d: Duration) -> Self {
        Self {
            at: Instant::now() + d,
        }
    }

    /// From the Lambda context's deadline (epoch milliseconds), minus `reserve`.
    pub fn from_lambda_deadline_ms(deadline_ms: u64, reserve: Duration) -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let left =
            Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(reserve);
        Self::after(left)
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether `needed` still fits before the deadline.
    pub fn allows(&self, needed: Duration) -> bool {
        self.remaining() > needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        let ceilings = [100, 200, 400, 800, 800, 800];
        for (d, c) in delays.iter().zip(ceilings) {
            assert!(
                d.as_millis() as u64 <= c && d.as_millis() as u64 >= c / 2,
                "{d:?} vs {c}"
            );
        }
    }

    #[test]
    fn deadline_from_lambda_context() {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let d = Deadline::from_lambda_deadline_ms(now_ms + 10_000, Duration::from_secs(2));
        assert!(d.remaining() <= Duration::from_secs(8) && d.remaining() > Duration::from_secs(7));
        assert!(
            !Deadline::from_lambda_deadline_ms(now_ms, Duration::from_secs(1))
                .allows(Duration::ZERO)
        );
    }
}

//! Exponential backoff with equal jitter, the one driver every retry loop uses ([`Attempts`]),
//! and deadlines that leave room to report.

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

/// How often and how patiently an operation is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

/// The attempts of one operation under a policy: it counts them, draws the delays between
/// them, and refuses a wait that no attempt is left for or that would end past the deadline.
#[derive(Debug)]
pub struct Attempts {
    policy: RetryPolicy,
    backoff: Backoff,
    made: u32,
    deadline: Option<Deadline>,
}

impl Attempts {
    /// The first attempt is about to be made.
    pub fn new(policy: RetryPolicy, deadline: Option<Deadline>) -> Self {
        Self {
            policy,
            backoff: Backoff::new(policy.base_delay, policy.max_delay),
            made: 1,
            deadline,
        }
    }

    /// The attempt under way (1-based).
    pub fn number(&self) -> u32 {
        self.made
    }

    /// The wait before another attempt (`instead` of the backoff's, when the caller has its
    /// own, as a pacer does), or `None` when the attempts or the time are used up.
    pub fn next_wait(&mut self, instead: Option<Duration>) -> Option<Duration> {
        if self.made >= self.policy.max_attempts {
            return None;
        }
        let delay = instead.unwrap_or_else(|| self.backoff.next_delay());
        if self.deadline.is_some_and(|d| !d.allows(delay)) {
            return None;
        }
        self.made += 1;
        Some(delay)
    }

    /// Waits the backoff's delay before another attempt; `false` when none is left.
    pub async fn wait(&mut self) -> bool {
        match self.next_wait(None) {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
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

    /// This deadline, or `at` if that comes first.
    pub fn or_sooner(self, at: Instant) -> Self {
        Self {
            at: self.at.min(at),
        }
    }

    /// Whether `needed` still fits before the deadline.
    pub fn allows(&self, needed: Duration) -> bool {
        self.remaining() > needed
    }

    /// The timeout a request that starts now may have when it may take up to `longest` (e.g.
    /// `ES_TIMEOUT_SECS`): `longest`, shortened near the deadline so that it ends
    /// [`ANSWER_MARGIN`] before it; `None` when less than the least useful time is left
    /// ([`MIN_REQUEST_TIME`], or `longest` when that is shorter). Near the deadline a request is
    /// shorter instead of not sent, so a function timeout close to `longest` still gets work
    /// done.
    pub fn request_timeout(&self, longest: Duration) -> Option<Duration> {
        let time = self.remaining().saturating_sub(ANSWER_MARGIN).min(longest);
        (time >= MIN_REQUEST_TIME.min(longest) && !time.is_zero()).then_some(time)
    }

    /// Whether `requests` requests that may each take up to `longest` can still run one after
    /// the other, each given at least the least useful time (see [`Deadline::request_timeout`]).
    pub fn fits_requests(&self, requests: u32, longest: Duration) -> bool {
        let least = MIN_REQUEST_TIME.min(longest);
        self.remaining() >= least * requests.max(1) + ANSWER_MARGIN
    }
}

/// The least time worth giving one request to a healthy service: a shorter request would
/// mostly be cut off, so the work waits for a fresh invocation instead.
pub const MIN_REQUEST_TIME: Duration = Duration::from_secs(3);

/// Kept after a request's timeout, before the deadline, so its caller can still act on the
/// outcome (put the work back on the queue).
pub const ANSWER_MARGIN: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn attempts_stop_at_the_policy_or_the_deadline() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let mut attempts = Attempts::new(policy, None);
        assert_eq!(attempts.number(), 1);
        assert!(attempts.wait().await);
        assert!(attempts.wait().await);
        assert_eq!(attempts.number(), 3);
        assert!(!attempts.wait().await, "three attempts in all");

        // A wait that would end past the deadline is refused; a caller's own wait counts too.
        let mut attempts = Attempts::new(policy, Some(Deadline::after(Duration::from_millis(500))));
        assert_eq!(
            attempts.next_wait(Some(Duration::from_millis(400))),
            Some(Duration::from_millis(400))
        );
        assert_eq!(attempts.next_wait(Some(Duration::from_millis(600))), None);
        assert_eq!(attempts.number(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_get_shorter_near_the_deadline_and_stop_below_the_useful_minimum() {
        let es = Duration::from_secs(30);
        let d = Deadline::after(Duration::from_secs(28));
        assert_eq!(d.request_timeout(es), Some(Duration::from_secs(26)));
        assert!(
            d.fits_requests(2, es),
            "a refresh and a removal fit in 28 s"
        );
        let d = Deadline::after(Duration::from_secs(118));
        assert_eq!(
            d.request_timeout(Duration::from_secs(60)),
            Some(Duration::from_secs(60))
        );
        let d = Deadline::after(Duration::from_secs(5));
        assert_eq!(d.request_timeout(es), Some(Duration::from_secs(3)));
        assert!(!d.fits_requests(2, es));
        let d = Deadline::after(Duration::from_millis(4900));
        assert_eq!(d.request_timeout(es), None, "less than 3 s to give it");
        // A configured timeout under the minimum is its own minimum.
        assert_eq!(
            d.request_timeout(Duration::from_secs(1)),
            Some(Duration::from_secs(1))
        );
    }

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

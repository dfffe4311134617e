//! How fast one container calls Bedrock. The account's quota (requests and tokens per minute,
//! per model and Region) is shared by every container, and no container knows how many others
//! run, so each finds its share from the answers it gets, the way TCP finds a link's capacity:
//!
//! - **Concurrency**, in the manner of Vector's adaptive request concurrency: calls in flight
//!   start at a safe [`INITIAL_CONCURRENCY`], grow by one per success while the limit is in use
//!   and latency holds (no more than twice the fastest call seen), and halve on throttling.
//!   `EMBED_CONCURRENCY` is the ceiling.
//! - **Rate**, in the manner of the AWS SDKs' adaptive retry mode: once throttled, calls are
//!   paced to [`DECREASE`] × the rate they were being sent at, and the pace grows by
//!   [`GROWTH_PER_SECOND`] of itself a second while calls succeed. A quota lower than one container's single in-flight call can send (600 a minute is
//!   10 a second; one 50 ms call at a time sends 20) is only met by pacing, and a tokens quota
//!   may admit only a few large Cohere calls a minute.
//!
//! Only a throttle of a call sent after the last cut cuts again: the calls in flight when the
//! quota ran out come back throttled together, and are one signal, not several.
//!
//! <https://vector.dev/docs/reference/configuration/sinks/http/#request.adaptive_concurrency>,
//! <https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html>

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
// Tokio's clock, so tests can run it paused.
use tokio::time::Instant;

/// Calls in flight before anything is known.
pub const INITIAL_CONCURRENCY: usize = 2;
/// What a throttle leaves of the concurrency and of the sending rate.
pub const DECREASE: f64 = 0.75;
/// How fast the paced rate grows while calls succeed: this share of itself a second, counted
/// by the time between successes but at most [`GROWTH_STEP`] of it per success — at a few calls
/// a minute the evidence comes a call at a time, and growth by the clock alone would overshoot
/// between two calls.
pub const GROWTH_PER_SECOND: f64 = 0.05;
const GROWTH_STEP: Duration = Duration::from_millis(200);
/// The sending rate is measured over this window.
const MEASURE_WINDOW: Duration = Duration::from_secs(5);
/// The pace never falls below this (calls a second): a throttled container still probes. Low,
/// because one Cohere call can carry a hundred texts and a tokens-per-minute quota may allow
/// only a few such calls a minute across every container.
const MIN_RATE: f64 = 0.02;
/// The shortest wait for the pace.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// The pacing of one container's calls; shared by its invocations (it lives as long as the
/// container, so what one invocation learned the next starts from).
#[derive(Debug)]
pub struct Pacer {
    ceiling: usize,
    adaptive: bool,
    state: Mutex<State>,
    released: Notify,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    limit: f64,
    /// Calls a second, once throttled; `None` while nothing has been throttled.
    rate: Option<f64>,
    tokens: f64,
    refilled: Instant,
    /// When recent calls were sent, for the measured sending rate.
    sent: VecDeque<Instant>,
    last_cut: Option<Instant>,
    /// When the pace last grew or was cut.
    grown_at: Instant,
    fastest: Option<Duration>,
}

/// What the pacer holds at a moment, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceReport {
    pub concurrency: usize,
    /// Calls a second, when paced.
    pub rate: Option<f64>,
}

impl Pacer {
    /// Adapts between one call and `ceiling` calls in flight.
    pub fn adaptive(ceiling: usize) -> Self {
        Self::new(ceiling, true)
    }

    /// Always `concurrency` calls in flight, never paced (`EMBED_ADAPTIVE=false`).
    pub fn fixed(concurrency: usize) -> Self {
        Self::new(concurrency, false)
    }

    fn new(ceiling: usize, adaptive: bool) -> Self {
        let ceiling = ceiling.max(1);
        let limit = if adaptive {
            INITIAL_CONCURRENCY.min(ceiling)
        } else {
            ceiling
        };
        Self {
            ceiling,
            adaptive,
            state: Mutex::new(State {
                in_flight: 0,
                limit: limit as f64,
                rate: None,
                tokens: 1.0,
                refilled: Instant::now(),
                sent: VecDeque::new(),
                last_cut: None,
                grown_at: Instant::now(),
                fastest: None,
            }),
            released: Notify::new(),
        }
    }

    /// The most calls that can be in flight: how many to start at once.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    pub fn report(&self) -> PaceReport {
        let state = self.state.lock().unwrap();
        PaceReport {
            concurrency: state.limit as usize,
            rate: state.rate,
        }
    }

    /// Waits for a turn to call; the permit reports how the call went.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let wait = {
                let mut state = self.state.lock().unwrap();
                let now = Instant::now();
                state.refill(now);
                if state.in_flight >= state.limit as usize {
                    None
                } else if state.rate.is_some() && state.tokens < 1.0 {
                    let rate = state.rate.unwrap_or(MIN_RATE);
                    // Never a zero wait: the clock must move for the tokens to come.
                    Some(Duration::from_secs_f64((1.0 - state.tokens) / rate).max(MIN_WAIT))
                } else {
                    if state.rate.is_some() {
                        state.tokens -= 1.0;
                    }
                    state.in_flight += 1;
                    state.sent.push_back(now);
                    forget_before(&mut state.sent, now);
                    let in_use = state.in_flight >= state.limit as usize;
                    return Permit {
                        pacer: self,
                        started: now,
                        in_use,
                        done: false,
                    };
                }
            };
            match wait {
                None => released.await,
                Some(delay) => {
                    // A released call may lift the limit sooner than the tokens arrive.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = released => {}
                    }
                }
            }
        }
    }

    fn finish(&self, started: Instant, in_use: bool, outcome: Outcome) {
        {
            let mut state = self.state.lock().unwrap();
            state.in_flight -= 1;
            if self.adaptive {
                let now = Instant::now();
                match outcome {
                    Outcome::Succeeded => state.grow(now, now - started, in_use, self.ceiling),
                    Outcome::Throttled => state.cut(now, started),
                    Outcome::Failed => {}
                }
            }
        }
        self.released.notify_waiters();
    }
}

/// Drops the moments older than the measuring window.
fn forget_before(moments: &mut VecDeque<Instant>, now: Instant) {
    while moments
        .front()
        .is_some_and(|t| now.duration_since(*t) > MEASURE_WINDOW)
    {
        moments.pop_front();
    }
}

enum Outcome {
    Succeeded,
    Throttled,
    Failed,
}

impl State {
    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.duration_since(self.refilled).as_secs_f64();
            // At most one call's burst: the pace is the point. (A hair under one is one: the
            // clock's resolution must not hold a call back forever.)
            self.tokens = (self.tokens + elapsed * rate).min(1.0);
            if self.tokens > 1.0 - 1e-6 {
                self.tokens = 1.0;
            }
        }
        self.refilled = now;
    }

    fn grow(&mut self, now: Instant, latency: Duration, in_use: bool, ceiling: usize) {
        let fastest = *self.fastest.get_or_insert(latency);
        self.fastest = Some(fastest.min(latency));
        if let Some(rate) = self.rate {
            let step = now.duration_since(self.grown_at).min(GROWTH_STEP);
            self.rate = Some(rate * (1.0 + GROWTH_PER_SECOND * step.as_secs_f64()));
        }
        self.grown_at = now;
        let latency_holds = latency <= fastest * 2;
        if in_use && latency_holds && self.limit < ceiling as f64 {
            let step = if self.last_cut.is_none() {
                1.0
            } else {
                1.0 / self.limit
            };
            self.limit = (self.limit + step).min(ceiling as f64);
        }
    }

    fn cut(&mut self, now: Instant, started: Instant) {
        if self.last_cut.is_some_and(|cut| started < cut) {
            // Sent before the last cut: already answered for.
            return;
        }
        self.last_cut = Some(now);
        self.limit = (self.limit * 0.5).max(1.0);
        let per_second = |moments: &VecDeque<Instant>| {
            let window = moments
                .front()
                .map(|first| now.duration_since(*first))
                .unwrap_or_default()
                .max(Duration::from_millis(500));
            moments.len() as f64 / window.as_secs_f64()
        };
        let sent = per_second(&self.sent);
        let base = self.rate.map_or(sent, |r| r.min(sent));
        self.rate = Some((base * DECREASE).max(MIN_RATE));
        self.tokens = 0.0;
        self.refilled = now;
        self.grown_at = now;
    }
}

/// A turn to call; dropped without a verdict (a cancelled call) it only frees the slot.
pub struct Permit<'a> {
    pacer: &'a Pacer,
    started: Instant,
    in_use: bool,
    done: bool,
}

impl Permit<'_> {
    pub fn succeeded(mut self) {
        self.done = true;
        self.pacer
            .finish(self.started, self.in_use, Outcome::Succeeded);
    }

    pub fn throttled(mut self) {
        self.done = true;
        self.pacer
            .finish(self.started, self.in_use, Outcome::Throttled);
    }

    pub fn failed(mut self) {
        self.done = true;
        self.pacer
            .finish(self.started, self.in_use, Outcome::Failed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pacer
                .finish(self.started, self.in_use, Outcome::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A quota of `per_second` calls (a token bucket of ten seconds' burst) that `callers`
    /// containers share, each with its own pacer; returns (successes, throttles) over `run`.
    async fn shared_quota(
        per_second: f64,
        callers: usize,
        latency: Duration,
        run: Duration,
    ) -> (usize, usize) {
        struct Quota {
            tokens: f64,
            at: tokio::time::Instant,
        }
        // Ten seconds' worth, as the stand-in holds, and at least one call.
        let capacity = (per_second * 10.0).max(1.0);
        let quota = Arc::new(Mutex::new(Quota {
            tokens: capacity,
            at: tokio::time::Instant::now(),
        }));
        let ok = Arc::new(AtomicUsize::new(0));
        let throttled = Arc::new(AtomicUsize::new(0));
        let end = tokio::time::Instant::now() + run;
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let pacer = Arc::new(Pacer::adaptive(8));
            for _ in 0..8 {
                let (pacer, quota, ok, throttled) =
                    (pacer.clone(), quota.clone(), ok.clone(), throttled.clone());
                tasks.push(tokio::spawn(async move {
                    while tokio::time::Instant::now() < end {
                        let permit = pacer.acquire().await;
                        tokio::time::sleep(latency).await;
                        let allowed = {
                            let mut q = quota.lock().unwrap();
                            let now = tokio::time::Instant::now();
                            q.tokens = (q.tokens
                                + now.duration_since(q.at).as_secs_f64() * per_second)
                                .min(capacity);
                            q.at = now;
                            if q.tokens >= 1.0 {
                                q.tokens -= 1.0;
                                true
                            } else {
                                false
                            }
                        };
                        if allowed {
                            ok.fetch_add(1, Ordering::SeqCst);
                            permit.succeeded();
                        } else {
                            throttled.fetch_add(1, Ordering::SeqCst);
                            permit.throttled();
                        }
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        (ok.load(Ordering::SeqCst), throttled.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn four_containers_settle_at_a_shared_quota() {
        let run = Duration::from_secs(300);
        let (ok, throttled) = shared_quota(10.0, 4, Duration::from_millis(50), run).await;
        let quota = 10.0 * run.as_secs_f64();
        println!("10 calls/s shared by 4: {ok} of {quota} admitted, {throttled} throttled");
        let share = ok as f64 / quota;
        let throttled_share = throttled as f64 / (ok + throttled) as f64;
        assert!(share > 0.85, "{ok} calls of a {quota} quota");
        assert!(
            throttled_share < 0.10,
            "{throttled} of {} throttled",
            ok + throttled
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_of_a_few_calls_a_minute_is_found_too() {
        // A tokens quota that admits about twenty large calls a minute across four containers.
        let run = Duration::from_secs(600);
        let (ok, throttled) = shared_quota(0.35, 4, Duration::from_millis(50), run).await;
        let quota = 0.35 * run.as_secs_f64();
        println!("0.35 calls/s shared by 4: {ok} of {quota} admitted, {throttled} throttled");
        assert!(
            ok as f64 / quota > 0.85,
            "{ok} calls of a {quota} quota, {throttled} throttled"
        );
        assert!(
            (throttled as f64) < 0.25 * (ok + throttled) as f64,
            "{throttled} of {} throttled",
            ok + throttled
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_throttling_concurrency_grows_to_the_ceiling() {
        let pacer = Pacer::adaptive(6);
        assert_eq!(pacer.report().concurrency, INITIAL_CONCURRENCY);
        for _ in 0..10 {
            // As many calls as the limit allows: it grows only while in use.
            let mut permits = Vec::new();
            for _ in 0..pacer.report().concurrency {
                permits.push(pacer.acquire().await);
            }
            tokio::time::advance(Duration::from_millis(10)).await;
            permits.into_iter().for_each(Permit::succeeded);
        }
        assert_eq!(
            pacer.report(),
            PaceReport {
                concurrency: 6,
                rate: None
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_halves_concurrency_and_paces_once_for_the_calls_in_flight() {
        let pacer = Pacer::adaptive(8);
        for _ in 0..10 {
            let p = pacer.acquire().await;
            tokio::time::advance(Duration::from_millis(100)).await;
            p.succeeded();
        }
        let before = pacer.report().concurrency;
        let permits = vec![pacer.acquire().await, pacer.acquire().await];
        for p in permits {
            p.throttled();
        }
        let after = pacer.report();
        assert_eq!(
            after.concurrency,
            (before / 2).max(1),
            "one cut for two throttles"
        );
        assert!(after.rate.is_some_and(|r| r > 0.0 && r < 10.0), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_never_adapts() {
        let pacer = Pacer::fixed(3);
        let p = pacer.acquire().await;
        p.throttled();
        assert_eq!(
            pacer.report(),
            PaceReport {
                concurrency: 3,
                rate: None
            }
        );
    }
}

//! How fast one container calls Bedrock. The account's quotas (requests and tokens per minute,
//! per model and Region) are shared by every container, and no container knows how many others
//! run, so each finds its share from the answers it gets, the way TCP finds a link's capacity:
//!
//! - **Concurrency**, in the manner of Vector's adaptive request concurrency: calls in flight
//!   start at a safe [`INITIAL_CONCURRENCY`], grow by one per success while the limit is in use
//!   and latency holds (no more than twice the fastest call seen), and halve on throttling.
//!   `EMBED_CONCURRENCY` is the ceiling.
//! - **Rates**, one per quota: calls a second and input tokens a second. Bedrock says which quota
//!   ran out ("Too many requests" or "Too many tokens, please wait before trying again"), and
//!   only that one is paced. A rate is unset until its quota first throttles; then it is a
//!   token bucket that lets a call start when the previous calls' cost has been paid off, so a
//!   Cohere call of a hundred texts waits longer than a Titan call of one. A call's tokens are
//!   estimated from its characters (the ratio learned from Bedrock's token counts) and settled
//!   when the count comes back.
//!
//! On a throttle the rate becomes [`DECREASE`] × the rate the container was sending at, or the
//! rate the quota admitted lately when that is lower (never less than half: one sparse sample
//! must not collapse it). Sending and admitted rates are measured over the time the container
//! had calls to make, so an idle spell between invocations does not read as a slow sender.
//! A quota's opening burst (a minute's worth, spent in a second by calls of 96 texts) is no
//! rate it sustains: the tokens quota's rates are measured over at least a paced call's time
//! and what it admitted only from when it first ran out, and a run of throttles returns to the
//! rate it began at only when the pace had stood there. The tokens quota's first throttle is
//! answered from the quota's own window instead: what the container got through in the last
//! minute, over a minute, is about its share of a quota that lets a minute's worth through, so
//! the pace starts a cut below that and grows back to it, rather than halving from the burst's
//! rate five or six times.
//! It then grows back as in CUBIC (and the SDKs' adaptive retry mode): fast at first, flat
//! near the rate that was throttled, and faster again beyond it, so a share left by containers
//! that finished is taken up. Growth runs by the clock of activity, the same for every
//! container whatever its rate, which is what makes their shares converge; but at most a tenth
//! of the way per successful call, since at a few calls a minute the evidence comes a call at
//! a time. Once tokens are paced, calls are sized to a few seconds of the token rate
//! ([`Pacer::texts_per_call`]), so that evidence comes often.
//!
//! Only a throttle of a call sent after the last cut cuts again: the calls in flight when the
//! quota ran out come back throttled together, and are one signal, not several.
//!
//! A quota refuses less when the rate falls; a service short of capacity refuses a share of
//! calls whatever the rate. So the cuts made since the pace last stood (a **chain**) count the
//! calls refused at the rates before and after the rate fell to [`TEST_RATE`] of where it
//! began, and hold it there until [`TEST_CALLS`] calls made at that rate decide (unless more
//! than half were refused, which no noise explains): if the share refused is still
//! about what it was (lower by no more than chance, between [`NOISE_MIN_SHARE`] and
//! [`NOISE_MAX_SHARE`]), slowing down did not help, so the lane is unpaced again and that share
//! becomes its **noise**: refusals retried at once rather than paced. Should the share then
//! rise above the noise at the restored rate, it was a quota after all (one shared with
//! containers that kept sending) and the noise is dropped. From then on a throttle cuts only
//! when the recent share rises clearly above the noise, and each chain tests it again. Only
//! the requests quota is tested so: "Too many tokens" names the quota that ran out.
//!
//! <https://vector.dev/docs/reference/configuration/sinks/http/#request.adaptive_concurrency>,
//! <https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html>,
//! <https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-token-burndown.html>

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::info;
// Tokio's clock, so tests can run it paused.
use tokio::time::Instant;

/// Calls in flight before anything is known.
pub const INITIAL_CONCURRENCY: usize = 2;
/// What a throttle leaves of the sending rate.
pub const DECREASE: f64 = 0.75;
/// The most one throttle takes off a rate, whatever the measurements say.
const DEEPEST_CUT: f64 = 0.5;
/// Seconds of activity after a cut until the rate is back at the rate that was throttled (the
/// plateau of the growth curve), for the requests quota and for the tokens quota (whose calls
/// are sized to [`CALL_SECONDS`], so ten calls). Growth by the clock, the same for every
/// container whatever its rate, is what makes containers converge to equal shares: one that
/// sends more is throttled more often, and cut more.
const REQUESTS_RECOVER_SECS: f64 = 10.0;
const TOKENS_RECOVER_SECS: f64 = 20.0;
/// ... but at most this share of the way per successful call: at a few calls a minute the
/// evidence comes a call at a time, and the clock must not run ahead of it.
const MOST_RECOVERY_PER_CALL: f64 = 0.1;
/// Rates are measured over at least this long a spell of activity ...
const MEASURE_WINDOW: Duration = Duration::from_secs(20);
/// ... and at least this many calls.
const MEASURE_CALLS: usize = 8;
/// The floor of each rate (a call every ten seconds; 1,200 tokens a minute): a throttled
/// container still probes, so it finds the quota again once others leave it room.
const MIN_CALL_RATE: f64 = 0.1;
const MIN_TOKEN_RATE: f64 = 20.0;
/// Input tokens per character before Bedrock has counted any (about four characters a token
/// in English; fewer in Japanese, which the counts then teach).
const INITIAL_TOKENS_PER_CHAR: f64 = 0.25;
/// Once the tokens quota paces calls, a call carries about this long of the container's token
/// rate: a call of 96 long texts can be minutes of a small share, and a pace learns a call at a
/// time, so smaller calls find the share sooner and lose less to a throttle.
const CALL_SECONDS: f64 = 2.0;
/// ... but never fewer texts than this in a call, so the requests quota is not spent instead.
const MIN_TEXTS_PER_CALL: usize = 2;
/// Outcomes kept per lane to measure the share of calls throttled lately.
const RECENT_CALLS: usize = 64;
/// A chain is tested once the rate is down to this part of the rate it began at (its first
/// cut) ...
const TEST_RATE: f64 = DECREASE;
/// ... on this many calls made at that rate or lower (a share of sixteen calls is known to
/// within about a tenth).
const TEST_CALLS: u32 = 16;
/// Refusals that come whatever the rate are believed between these shares of calls: fewer
/// are a quota's usual edge; more are a quota exhausted, or an outage, and are paced.
const NOISE_MIN_SHARE: f64 = 0.1;
const NOISE_MAX_SHARE: f64 = 0.5;
/// The least part of the sending rate that noise lets through, measured roughly: under
/// [`NOISE_MAX_SHARE`] refused, half; a rate measured over a few calls reads lower.
const ADMITTED_UNDER_NOISE: f64 = 0.35;
/// The shortest wait for the pace.
const MIN_WAIT: Duration = Duration::from_millis(1);
/// The window of a per-minute quota: within any such span it lets through at most a minute's
/// worth (its burst included), so what a container got through in the last one, over a
/// minute, is about its share once the quota has run out.
const QUOTA_WINDOW: Duration = Duration::from_secs(60);

/// Which of the account's quotas a throttle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Requests per minute: "Too many requests, please wait before trying again."
    Requests,
    /// Tokens per minute (or per day): "Too many tokens, please wait before trying again."
    Tokens,
    /// A throttle that does not say; both rates are cut.
    Unknown,
}

impl Quota {
    /// Reads Bedrock's ThrottlingException message.
    pub fn of_message(message: &str) -> Self {
        let message = message.to_ascii_lowercase();
        if message.contains("too many tokens") {
            Quota::Tokens
        } else if message.contains("too many requests") {
            Quota::Requests
        } else {
            Quota::Unknown
        }
    }
}

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
    /// Calls waiting for a turn.
    waiting: usize,
    limit: f64,
    fastest: Option<Duration>,
    calls: Lane,
    tokens: Lane,
    tokens_per_char: f64,
    /// Running totals, and a few past readings of them to measure rates against.
    totals: Totals,
    readings: VecDeque<(Instant, Totals)>,
    /// When `totals.active` was last brought up to date.
    ticked: Instant,
    /// The totals when the tokens quota first throttled.
    tokens_ran_out: Option<Totals>,
    /// Tokens of the calls that succeeded within the last [`QUOTA_WINDOW`], by when they
    /// finished, and their sum.
    window: VecDeque<(Instant, f64)>,
    window_tokens: f64,
}

/// Counters since the pacer began.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    /// Seconds during which the container had calls in flight or waiting.
    active: f64,
    sent_calls: f64,
    sent_tokens: f64,
    ok_calls: f64,
    ok_tokens: f64,
}

/// The pace of one quota, in calls or tokens a second.
#[derive(Debug)]
struct Lane {
    /// The quota's name, for logs.
    name: &'static str,
    /// Whether this quota's throttles may be noise. Not the tokens quota's: "Too many tokens"
    /// names the quota that ran out, which refusals for want of capacity do not.
    may_be_noise: bool,
    /// Units a second, once this quota has throttled (or from the start under a budget);
    /// `None` before.
    rate: Option<f64>,
    floor: f64,
    /// A budget the rate never exceeds (`BEDROCK_TPM`'s share, for tokens).
    budget: Option<f64>,
    /// What the calls started so far still owe (never above zero): a call may start when
    /// it is paid off.
    level: f64,
    refilled: Instant,
    last_cut: Option<Instant>,
    /// The rate that was throttled, the rate the cut left, and the way back since (1: back
    /// at the throttled rate).
    throttled_at: f64,
    cut_to: f64,
    recovered: f64,
    recover_secs: f64,
    /// Whether the streak of cuts under way returns to the rate it began at.
    streak_remembered: bool,
    /// Whether the quota's opening burst, spent at once, can read as a rate (the tokens
    /// quota's, spent by calls of a hundred texts; the requests quota's first rate comes a
    /// call at a time).
    burst_misleads: bool,
    /// Active seconds (the pacer's `totals.active`) at the last growth or cut.
    grown_at: f64,
    /// The last [`RECENT_CALLS`] outcomes that tell of this quota (true: throttled by it).
    recent: VecDeque<bool>,
    /// The share of calls refused whatever the rate, once a test has shown it (0 before).
    noise: f64,
    /// Calls (and throttles among them) since the noise was found and the cuts undone: at the
    /// restored rate the share must stay near the noise, or it was a quota after all.
    probation: Option<(u32, u32)>,
    /// The cuts under test, while they are.
    chain: Option<Chain>,
}

/// What sets a quota's lane apart.
#[derive(Debug, Clone, Copy)]
struct LaneKind {
    may_be_noise: bool,
    burst_misleads: bool,
}

impl LaneKind {
    /// Refusals for want of capacity read as "Too many requests" too, so its throttles may be
    /// noise; its first rate is measured a call at a time.
    const REQUESTS: Self = Self {
        may_be_noise: true,
        burst_misleads: false,
    };
    /// "Too many tokens" names the quota that ran out, so never noise; but its opening burst,
    /// spent at once by calls of a hundred texts, can read as a rate it sustains.
    const TOKENS: Self = Self {
        may_be_noise: false,
        burst_misleads: true,
    };
}

/// Cuts under test: where the first of them began, and how calls fared at the rates before and
/// once the rate is down to [`TEST_RATE`] of it.
#[derive(Debug, Clone, Copy)]
struct Chain {
    /// Calls allowed in flight when it began.
    limit: f64,
    /// The rate sent at when the chain began.
    sent: f64,
    /// Calls (and the throttles among them) at rates above [`TEST_RATE`] of it, from the
    /// recent calls before the chain on ...
    high: (u32, u32),
    /// ... and at the lowered rate.
    low: (u32, u32),
}

/// A test's verdict on its chain of cuts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// The share refused fell: a quota, the cuts stand.
    Quota,
    /// The share refused held: the cuts are undone; concurrency returns to this limit.
    Noise { limit: f64 },
}

/// What the pacer holds at a moment, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceReport {
    pub concurrency: usize,
    /// Calls a second, when the requests quota has throttled.
    pub rate: Option<f64>,
    /// Input tokens a second, when the tokens quota has throttled.
    pub token_rate: Option<f64>,
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
        let now = Instant::now();
        Self {
            ceiling,
            adaptive,
            state: Mutex::new(State {
                in_flight: 0,
                waiting: 0,
                limit: limit as f64,
                fastest: None,
                calls: Lane::new(
                    "requests",
                    LaneKind::REQUESTS,
                    MIN_CALL_RATE,
                    REQUESTS_RECOVER_SECS,
                    now,
                ),
                tokens: Lane::new(
                    "tokens",
                    LaneKind::TOKENS,
                    MIN_TOKEN_RATE,
                    TOKENS_RECOVER_SECS,
                    now,
                ),
                tokens_per_char: INITIAL_TOKENS_PER_CHAR,
                totals: Totals::default(),
                readings: VecDeque::new(),
                ticked: now,
                tokens_ran_out: None,
                window: VecDeque::new(),
                window_tokens: 0.0,
            }),
            released: Notify::new(),
        }
    }

    /// Never more than `tokens_per_second` input tokens a second (a share of `BEDROCK_TPM`):
    /// paced from the first call, before Bedrock has to throttle anything.
    pub fn with_token_budget(self, tokens_per_second: f64) -> Self {
        {
            let mut state = self.state.lock().unwrap();
            let budget = tokens_per_second.max(MIN_TOKEN_RATE);
            state.tokens.budget = Some(budget);
            state.tokens.rate = Some(budget);
        }
        self
    }

    /// How many of `texts` to send in one call, at most `most` (the model's batch): all of
    /// them until the tokens quota paces calls, then about [`CALL_SECONDS`] of the rate.
    pub fn texts_per_call(&self, most: usize, texts: &[&str]) -> usize {
        let most = most.max(1);
        let state = self.state.lock().unwrap();
        let Some(rate) = state.tokens.rate else {
            return most;
        };
        if texts.is_empty() {
            return most;
        }
        let chars: usize = texts.iter().map(|t| t.len()).sum();
        let tokens_per_text = chars as f64 / texts.len() as f64 * state.tokens_per_char;
        let fits = (rate * CALL_SECONDS / tokens_per_text.max(1.0)) as usize;
        fits.clamp(MIN_TEXTS_PER_CALL.min(most), most)
    }

    /// Whether a quota paces this container (or `BEDROCK_TPM` does).
    pub fn paces(&self) -> bool {
        let state = self.state.lock().unwrap();
        self.adaptive && (state.calls.rate.is_some() || state.tokens.rate.is_some())
    }

    /// The most calls that can be in flight: how many to start at once.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// Whether the pacer paces throttled calls (so a throttled call needs no backoff of its own).
    pub fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    pub fn report(&self) -> PaceReport {
        let state = self.state.lock().unwrap();
        PaceReport {
            concurrency: state.limit as usize,
            rate: state.calls.rate,
            token_rate: state.tokens.rate,
        }
    }

    /// How long until the pace lets the next call start: what a throttled piece of work
    /// handed back waits before it is tried again (zero while nothing is owed).
    pub fn capacity_in(&self) -> Duration {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        state.calls.wait(now).max(state.tokens.wait(now))
    }

    /// How long the pace takes to send `chars` characters of text in `calls` calls, on top of
    /// what it still owes; `None` while neither quota paces this container.
    pub fn time_for(&self, chars: usize, calls: usize) -> Option<Duration> {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        let tokens = chars as f64 * state.tokens_per_char;
        let owed = state.calls.wait(now).max(state.tokens.wait(now));
        let by_calls = state.calls.rate.map(|r| calls as f64 / r);
        let by_tokens = state.tokens.rate.map(|r| tokens / r);
        if by_calls.is_none() && by_tokens.is_none() {
            return None;
        }
        // The rates bound the container's throughput whatever its concurrency.
        let secs = by_calls.unwrap_or(0.0).max(by_tokens.unwrap_or(0.0));
        Some(owed + Duration::from_secs_f64(secs))
    }

    /// Waits for a turn to make a call carrying `chars` characters of text; the permit
    /// reports how the call went.
    pub async fn acquire(&self, chars: usize) -> Permit<'_> {
        let mut counted = false;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let wait = {
                let mut state = self.state.lock().unwrap();
                let now = Instant::now();
                state.tick(now);
                if !counted {
                    state.waiting += 1;
                    counted = true;
                }
                let tokens = chars as f64 * state.tokens_per_char;
                match state.wait(now) {
                    Some(wait) => wait,
                    None => {
                        state.waiting -= 1;
                        state.start(now, tokens);
                        let in_use = state.in_flight >= state.limit as usize;
                        return Permit {
                            pacer: self,
                            started: now,
                            chars,
                            tokens,
                            in_use,
                            done: false,
                        };
                    }
                }
            };
            // Dropped while waiting (the caller's deadline), the turn is not counted as wanted.
            let _leave = Waiting(self);
            match wait {
                None => released.await,
                Some(delay) => {
                    // A released call may lift the limit sooner than the pace allows a start.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = released => {}
                    }
                }
            }
            std::mem::forget(_leave);
        }
    }

    fn finish(&self, permit: &Permit<'_>, outcome: Outcome) {
        {
            let mut state = self.state.lock().unwrap();
            let now = Instant::now();
            state.tick(now);
            state.in_flight -= 1;
            if self.adaptive {
                match outcome {
                    Outcome::Succeeded(tokens) => {
                        state.succeeded(now, permit, tokens, self.ceiling)
                    }
                    Outcome::Throttled(quota) => state.throttled(now, permit, quota),
                    Outcome::Failed => {}
                }
            }
        }
        self.released.notify_waiters();
    }
}

/// Takes a waiting call off the count when its `acquire` is dropped mid-wait.
struct Waiting<'a>(&'a Pacer);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap();
        state.tick(Instant::now());
        state.waiting -= 1;
    }
}

enum Outcome {
    Succeeded(Option<u64>),
    Throttled(Quota),
    Failed,
}

impl State {
    /// Counts the time since the last tick as active if anything was in flight or waiting.
    fn tick(&mut self, now: Instant) {
        if self.in_flight + self.waiting > 0 {
            self.totals.active += now.duration_since(self.ticked).as_secs_f64();
        }
        self.ticked = now;
    }

    /// `None` when a call may start now; otherwise how long to wait (`Some(None)`: until a
    /// call in flight finishes).
    fn wait(&mut self, now: Instant) -> Option<Option<Duration>> {
        if self.in_flight >= self.limit as usize {
            return Some(None);
        }
        let wait = self.calls.wait(now).max(self.tokens.wait(now));
        (!wait.is_zero()).then_some(Some(wait))
    }

    fn start(&mut self, now: Instant, tokens: f64) {
        self.calls.take(1.0);
        self.tokens.take(tokens);
        self.in_flight += 1;
        self.totals.sent_calls += 1.0;
        self.totals.sent_tokens += tokens;
        self.readings.push_back((now, self.totals));
        while self.readings.len() > MEASURE_CALLS
            && self
                .readings
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= MEASURE_WINDOW)
        {
            self.readings.pop_front();
        }
    }

    fn succeeded(
        &mut self,
        now: Instant,
        permit: &Permit<'_>,
        tokens: Option<u64>,
        ceiling: usize,
    ) {
        let latency = now - permit.started;
        let counted = tokens.map_or(permit.tokens, |t| t as f64);
        if let Some(t) = tokens
            && permit.chars > 0
        {
            // A moving average of Bedrock's counts, weighted by the call's size.
            let weight = (permit.chars as f64 / 20_000.0).min(0.5);
            let ratio = t as f64 / permit.chars as f64;
            self.tokens_per_char += (ratio - self.tokens_per_char) * weight.max(0.05);
            // The estimate was paid at the start; the count settles the difference.
            self.tokens.take(counted - permit.tokens);
        }
        self.totals.ok_calls += 1.0;
        self.totals.ok_tokens += counted;
        self.window.push_back((now, counted));
        self.window_tokens += counted;
        self.forget_before(now);
        let verdict = self.calls.outcome(false);
        self.judged(verdict);
        let verdict = self.tokens.outcome(false);
        self.judged(verdict);
        let active = self.totals.active;
        self.calls.grow(active);
        self.tokens.grow(active);

        let fastest = *self.fastest.get_or_insert(latency);
        self.fastest = Some(fastest.min(latency));
        let latency_holds = latency <= fastest * 2;
        if permit.in_use && latency_holds && self.limit < ceiling as f64 {
            let cut_before = self.calls.last_cut.is_some() || self.tokens.last_cut.is_some();
            let step = if cut_before { 1.0 / self.limit } else { 1.0 };
            self.limit = (self.limit + step).min(ceiling as f64);
        }
    }

    fn throttled(&mut self, now: Instant, permit: &Permit<'_>, quota: Quota) {
        // Rates measured over the recent spell of activity, in calls and in tokens.
        let before = self
            .readings
            .front()
            .map_or_else(Totals::default, |(_, t)| *t);
        let spell = self.totals.active - before.active;
        let measure = |over: f64, sent: f64, sent_before: f64, ok: f64, ok_before: f64| Measured {
            active: self.totals.active,
            spell,
            sent: (sent - sent_before).max(0.0) / over,
            admitted: (ok - ok_before).max(0.0) / over,
        };
        let (t, b) = (&self.totals, &before);
        // Calls over at least one call's time: a container that has just started sent its
        // first calls within a fraction of a second, and that is the rate its requests test
        // starts from. Tokens over at least the time a paced call carries: a first call of a
        // hundred texts, sent at once out of a minute's burst, must not read as a rate the
        // quota could ever sustain.
        // Before any call has succeeded, the refused call's own time is the one measure of a
        // call's: a container whose first call is refused (noise, or a quota others spent)
        // sent at the rate of its first calls, not one every half second.
        let call = self
            .fastest
            .unwrap_or(now - permit.started)
            .as_secs_f64()
            .max(0.01);
        let calls = measure(
            spell.max(call),
            t.sent_calls,
            b.sent_calls,
            t.ok_calls,
            b.ok_calls,
        );
        let mut tokens = measure(
            spell.max(CALL_SECONDS),
            t.sent_tokens,
            b.sent_tokens,
            t.ok_tokens,
            b.ok_tokens,
        );
        if matches!(quota, Quota::Tokens | Quota::Unknown) {
            // What the tokens quota admits is measured from when it first ran out: the burst
            // it let through before (a minute's worth, spent in a second) is no share of it.
            let ran_out = *self.tokens_ran_out.get_or_insert(*t);
            if ran_out.active > b.active {
                let since = (t.active - ran_out.active).max(CALL_SECONDS);
                tokens.admitted = (t.ok_tokens - ran_out.ok_tokens).max(0.0) / since;
            }
        }
        let limit = self.limit;
        let mut cut = false;
        if matches!(quota, Quota::Requests | Quota::Unknown) {
            let verdict = self.calls.outcome(true);
            self.judged(verdict);
            cut |= self.calls.cut(now, permit.started, calls, 1.0, limit, None);
        }
        if matches!(quota, Quota::Tokens | Quota::Unknown) {
            let verdict = self.tokens.outcome(true);
            self.judged(verdict);
            let share = if quota == Quota::Tokens {
                self.first_token_share(now)
            } else {
                None
            };
            cut |= self
                .tokens
                .cut(now, permit.started, tokens, permit.tokens, limit, share);
        }
        if cut {
            self.limit = (self.limit * 0.5).max(1.0);
        }
    }

    /// Drops the successes older than [`QUOTA_WINDOW`] from the window.
    fn forget_before(&mut self, now: Instant) {
        while let Some(&(at, tokens)) = self.window.front() {
            if now.duration_since(at) < QUOTA_WINDOW {
                break;
            }
            self.window.pop_front();
            self.window_tokens -= tokens;
        }
    }

    /// The container's share of a tokens quota that has just run out for the first time: the
    /// tokens it got through in the last [`QUOTA_WINDOW`], spread over the window. A burst
    /// spent in a second by calls of a hundred texts is the quota's minute, not a rate it
    /// sustains, and cutting from the rate it was sent at would take five or six throttles to
    /// come down to the share; this is one. `None` when nothing went through (nothing is
    /// known of the share), or once the lane has been cut (its own measurements lead).
    fn first_token_share(&mut self, now: Instant) -> Option<f64> {
        if self.tokens.last_cut.is_some() {
            return None;
        }
        self.forget_before(now);
        (self.window_tokens > 0.0).then(|| self.window_tokens / QUOTA_WINDOW.as_secs_f64())
    }

    /// Applies a test's verdict: a cut found to answer noise gives its concurrency back.
    fn judged(&mut self, verdict: Option<Verdict>) {
        if let Some(Verdict::Noise { limit }) = verdict {
            self.limit = self.limit.max(limit);
        }
    }
}

/// Rates over the recent spell of activity, in one lane's units, at `active` seconds of it.
#[derive(Debug, Clone, Copy)]
struct Measured {
    active: f64,
    /// Seconds of activity the rates were measured over.
    spell: f64,
    sent: f64,
    admitted: f64,
}

/// Two and a half standard deviations of the difference between the shares refused of two
/// samples of calls, `(calls, refused)` each, were both drawn from one share (their pooled
/// one). A chain that opened on a container's first calls has a handful of them before its cut
/// — one call, refused, is a share of one — and only a test that counts both samples' sizes
/// does not read that as a share the lowered rate must match.
fn chance_between(a: (u32, u32), b: (u32, u32)) -> f64 {
    let (n_a, n_b) = (f64::from(a.0.max(1)), f64::from(b.0.max(1)));
    let pooled = f64::from(a.1 + b.1) / (n_a + n_b);
    2.5 * (pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)).sqrt()
}

impl Lane {
    fn new(
        name: &'static str,
        kind: LaneKind,
        floor: f64,
        recover_secs: f64,
        now: Instant,
    ) -> Self {
        let LaneKind {
            may_be_noise,
            burst_misleads,
        } = kind;
        Self {
            name,
            may_be_noise,
            rate: None,
            floor,
            budget: None,
            level: 0.0,
            refilled: now,
            last_cut: None,
            throttled_at: 0.0,
            cut_to: 0.0,
            recovered: 0.0,
            recover_secs,
            streak_remembered: false,
            burst_misleads,
            grown_at: 0.0,
            recent: VecDeque::with_capacity(RECENT_CALLS + 1),
            noise: 0.0,
            probation: None,
            chain: None,
        }
    }

    /// The share of recent calls this quota throttled.
    fn recent_share(&self) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        self.recent.iter().filter(|&&t| t).count() as f64 / self.recent.len() as f64
    }

    /// Records how a call that tells of this quota fared (`throttled` by it or not), and
    /// judges the chain of cuts once enough calls have been made at its lowered rate.
    fn outcome(&mut self, throttled: bool) -> Option<Verdict> {
        self.recent.push_back(throttled);
        if self.recent.len() > RECENT_CALLS {
            self.recent.pop_front();
        }
        if let Some((calls, refused)) = &mut self.probation {
            *calls += 1;
            *refused += u32::from(throttled);
            if *calls >= TEST_CALLS {
                let share = f64::from(*refused) / f64::from(*calls);
                let chance = 2.0 * (self.noise * (1.0 - self.noise) / f64::from(*calls)).sqrt();
                if share > self.noise + chance {
                    // More refused at the restored rate: a quota (one shared with others
                    // that were sending more while this container slowed down).
                    info!(
                        quota = self.name,
                        refused = share,
                        noise = self.noise,
                        "more calls refused once the pace was restored: a quota after all, paced again"
                    );
                    self.noise = 0.0;
                }
                self.probation = None;
            }
            return None;
        }
        let rate = self.rate?;
        let chain = self.chain.as_mut()?;
        let counts = if rate > chain.sent * TEST_RATE * 1.001 && rate > self.floor * 2.0 {
            &mut chain.high
        } else {
            &mut chain.low
        };
        counts.0 += 1;
        counts.1 += u32::from(throttled);
        // Three calls in four refused at the test rate: a quota far below it, decided at once.
        let (calls, refused) = chain.low;
        let far_below = refused >= 5 && refused * 4 > calls * 3;
        if calls < TEST_CALLS && !far_below {
            return None;
        }
        let chain = self.chain.take()?;
        let share = |(calls, throttled): (u32, u32)| f64::from(throttled) / f64::from(calls);
        let (high, low) = (share(chain.high), share(chain.low));
        let noise = (NOISE_MIN_SHARE..=NOISE_MAX_SHARE).contains(&low);
        // Lower by more than chance (two and a half standard deviations of the difference of
        // the two shares) answers a quota; so do refusals that came with the rate
        // (few before the first cut). A shared quota that only looked like noise here shows
        // itself in the probation that follows.
        let chance = chance_between(chain.high, chain.low);
        if noise && high >= NOISE_MIN_SHARE && low >= high - chance {
            // Slowing down did not lower the refusals: the lane is unpaced again (at its
            // budget, if it has one), and concurrency free to grow; the probation that follows
            // tells a quota that only looked like noise.
            info!(
                quota = self.name,
                refused = low,
                before = high,
                "Bedrock refuses this share of calls whatever the rate, not a quota: retried at once rather than paced"
            );
            // The share both samples show: sixteen calls alone put it within a tenth or so,
            // and a noise believed too low reads the next run of refusals as a quota.
            let (calls, refused) = (chain.high.0 + chain.low.0, chain.high.1 + chain.low.1);
            self.noise = (f64::from(refused) / f64::from(calls.max(1))).min(NOISE_MAX_SHARE);
            self.probation = Some((0, 0));
            self.rate = self.budget;
            self.last_cut = None;
            self.recovered = 0.0;
            self.level = 0.0;
            Some(Verdict::Noise { limit: chain.limit })
        } else {
            self.noise = self.noise.min(low);
            Some(Verdict::Quota)
        }
    }

    /// Whether a throttle of a call sent after the last cut should cut: always, unless the
    /// lane knows its noise and the recent share is within it.
    fn throttle_warrants_cut(&self) -> bool {
        if let Some((calls, refused)) = self.probation {
            // Only nearly every call refused ends a probation early.
            return refused >= 6 && refused * 4 >= calls * 3;
        }
        self.noise == 0.0 || self.recent_share() > self.noise + self.noise_margin()
    }

    /// How far above the noise the recent share may be by chance: two standard
    /// deviations of a share of [`RECENT_CALLS`] calls.
    fn noise_margin(&self) -> f64 {
        2.0 * (self.noise * (1.0 - self.noise) / RECENT_CALLS as f64).sqrt()
    }

    /// Opens a chain at a cut sending at `sent` with `limit` calls in flight, unless one is open.
    fn chain_cut(&mut self, sent: f64, limit: f64) {
        if self.chain.is_none() && self.may_be_noise {
            self.chain = Some(Chain {
                limit,
                sent,
                high: (
                    self.recent.len() as u32,
                    self.recent.iter().filter(|&&t| t).count() as u32,
                ),
                low: (0, 0),
            });
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.duration_since(self.refilled).as_secs_f64();
            self.level = (self.level + elapsed * rate).min(0.0);
            // A hair under zero is zero: the clock's resolution must not hold a call forever.
            if self.level > -1e-9 {
                self.level = 0.0;
            }
        }
        self.refilled = now;
    }

    /// How long until what is owed is paid off.
    fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        match self.rate {
            Some(rate) if self.level < 0.0 => {
                Duration::from_secs_f64(-self.level / rate).max(MIN_WAIT)
            }
            _ => Duration::ZERO,
        }
    }

    fn take(&mut self, cost: f64) {
        if self.rate.is_some() {
            self.level = (self.level - cost).min(0.0);
        }
    }

    /// A success at `active` seconds of activity: the rate follows a cubic through the rate
    /// the cut left and, `recover_secs` later, the rate that was throttled.
    fn grow(&mut self, active: f64) {
        if self.last_cut.is_none() {
            // Unpaced, or at its budget.
            return;
        }
        let step = (active - self.grown_at) / self.recover_secs;
        self.recovered += step.clamp(0.0, MOST_RECOVERY_PER_CALL);
        self.grown_at = active;
        // A cut at the floor leaves no dip; growth beyond the plateau must still come.
        let dip = (1.0 - self.cut_to / self.throttled_at).max(1.0 - DECREASE);
        let rate = self.throttled_at * (1.0 + dip * (self.recovered - 1.0).powi(3));
        let rate = rate.max(self.floor);
        self.rate = Some(self.budget.map_or(rate, |b| rate.min(b)));
        if self.chain.is_some_and(|chain| rate >= chain.sent) {
            // Back where the chain began without a test: the pace stood.
            self.chain = None;
        }
    }

    /// A throttle of a call started at `started`, with `limit` calls allowed in flight, and the
    /// container's `share` of the quota when it is known from its window; returns whether the
    /// rate was cut.
    fn cut(
        &mut self,
        now: Instant,
        started: Instant,
        measured: Measured,
        cost: f64,
        limit: f64,
        share: Option<f64>,
    ) -> bool {
        let Measured {
            active,
            spell,
            sent,
            admitted,
        } = measured;
        if self.last_cut.is_some_and(|cut| started < cut) {
            // Sent before the last cut: already answered for.
            return false;
        }
        if !self.throttle_warrants_cut() {
            // Within the refusals that come whatever the rate: retried at once.
            return false;
        }
        if self.probation.take().is_some() {
            self.noise = 0.0;
        }
        self.refill(now);
        let base = self.rate.map_or(sent, |r| r.min(sent)).max(self.floor);
        self.chain_cut(base, limit);
        // A chain under test goes no deeper than its test rate until the test is decided, while
        // the share refused is one noise could explain (a quota far below the rate refuses
        // more, and is cut as deep as it needs).
        let deepest = self
            .chain
            .filter(|chain| {
                // A handful of calls (a container that has just started) tells nothing yet.
                let (calls, refused) = chain.high;
                calls < TEST_CALLS / 2
                    || (refused * 10 >= calls
                        && f64::from(refused) <= f64::from(calls) * NOISE_MAX_SHARE
                        // A quota the containers overrun admits a small part of what is
                        // sent; noise, most of it.
                        && admitted >= base * ADMITTED_UNDER_NOISE)
            })
            .map_or(0.0, |chain| chain.sent * TEST_RATE);
        let to = (base * DECREASE)
            .min(admitted)
            .max(base * DEEPEST_CUT)
            .max(deepest)
            .max(self.floor);
        self.rate = Some(to);
        // Throttled again before any success: the rate to return to is still the one of the
        // first cut of the streak, so a quota that was exhausted for a while (by another
        // application, say) is taken up again within a few calls once it has room. For the
        // tokens quota, only a rate the lane stood at, measured over a few seconds, is
        // remembered so: its burst spent at once by calls of a hundred texts, or a rate still
        // being cut from it, is none the quota sustains.
        let first_of_streak = self.recovered > 0.0 || self.last_cut.is_none();
        if first_of_streak {
            let stood = self.last_cut.is_none() || self.recovered >= 1.0;
            self.streak_remembered = !self.burst_misleads || (stood && spell >= CALL_SECONDS);
        }
        if first_of_streak || !self.streak_remembered {
            self.throttled_at = base;
        }
        self.cut_to = to;
        self.recovered = 0.0;
        self.grown_at = active;
        self.last_cut = Some(now);
        // The throttled call's retry waits for its own cost at the new pace.
        self.level = self.level.min(0.0) - cost;
        if let Some(share) = share {
            // The share the window measured is the rate to return to, and the pace starts a
            // cut below it. The retry goes in a call sized to the new pace, so it waits for
            // such a call's cost, not the throttled call's hundred texts at the share.
            let share = share.min(base).max(self.floor);
            self.throttled_at = share;
            self.streak_remembered = true;
            self.cut_to = (share * DECREASE).max(self.floor);
            self.rate = Some(self.budget.map_or(self.cut_to, |b| self.cut_to.min(b)));
            self.level = -(self.cut_to * CALL_SECONDS).min(cost);
        }
        true
    }
}

/// A turn to call; dropped without a verdict (a cancelled call) it only frees the slot.
pub struct Permit<'a> {
    pacer: &'a Pacer,
    started: Instant,
    chars: usize,
    /// The tokens estimated (and paid) at the start.
    tokens: f64,
    in_use: bool,
    done: bool,
}

impl Permit<'_> {
    /// The call succeeded; `tokens` is Bedrock's count of its input, when it gave one.
    pub fn succeeded(mut self, tokens: Option<u64>) {
        self.done = true;
        self.pacer.finish(&self, Outcome::Succeeded(tokens));
    }

    /// The call was throttled by `quota`.
    pub fn throttled(mut self, quota: Quota) {
        self.done = true;
        self.pacer.finish(&self, Outcome::Throttled(quota));
    }

    pub fn failed(mut self) {
        self.done = true;
        self.pacer.finish(&self, Outcome::Failed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pacer.finish(self, Outcome::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A per-second quota as the stand-in keeps it: a bucket holding ten seconds' worth (at
    /// least `floor`), refilled continuously; a throttled call takes nothing.
    struct Bucket {
        per_second: f64,
        capacity: f64,
        level: f64,
        at: Instant,
    }

    impl Bucket {
        fn new(per_second: f64, floor: f64, burst_secs: f64) -> Self {
            let capacity = (per_second * burst_secs).max(floor);
            Self {
                per_second,
                capacity,
                level: capacity,
                at: Instant::now(),
            }
        }

        fn take(&mut self, amount: f64) -> bool {
            let now = Instant::now();
            self.level = (self.level + now.duration_since(self.at).as_secs_f64() * self.per_second)
                .min(self.capacity);
            self.at = now;
            if self.level < amount {
                return false;
            }
            self.level -= amount;
            true
        }
    }

    /// An account's quota shared by `callers` containers, each with its own pacer and eight
    /// workers calling as fast as it lets them.
    struct Account {
        calls_per_second: Option<f64>,
        tokens_per_second: Option<f64>,
        callers: usize,
        run: Duration,
        /// A container stops calling after this long (its work is done), by caller.
        stops: Vec<Option<Duration>>,
        /// The share of calls refused whatever the rate, at random, as a service short of
        /// capacity does.
        refuse_share: f64,
        /// Seconds of the quota the account lets through at once (the stand-in's
        /// `--quota-burst-secs`), and the input tokens of one text.
        burst_secs: f64,
        tokens_per_text: u64,
    }

    impl Default for Account {
        fn default() -> Self {
            Self {
                calls_per_second: None,
                tokens_per_second: None,
                callers: 4,
                run: Duration::from_secs(300),
                stops: vec![],
                refuse_share: 0.0,
                burst_secs: 10.0,
                tokens_per_text: 16,
            }
        }
    }

    #[derive(Debug, Default, Clone)]
    struct Tally {
        ok: u64,
        throttled: u64,
        tokens: u64,
        /// Successful calls by container.
        by_caller: Vec<u64>,
    }

    /// Runs the account; returns the tallies of each of `spans` (from, to) of the run.
    async fn run_account(account: Account, spans: &[(Duration, Duration)]) -> Vec<Tally> {
        let start = Instant::now();
        let requests = account
            .calls_per_second
            .map(|r| Bucket::new(r, 1.0, account.burst_secs));
        let tokens = account
            .tokens_per_second
            .map(|r| Bucket::new(r, 16_384.0, account.burst_secs));
        let per_text = account.tokens_per_text;
        let quota = Arc::new(Mutex::new((requests, tokens)));
        let spans: Arc<Vec<(Duration, Duration)>> = Arc::new(spans.to_vec());
        let blank = Tally {
            by_caller: vec![0; account.callers],
            ..Tally::default()
        };
        let tallies = Arc::new(Mutex::new(vec![blank; spans.len()]));
        let mut tasks = Vec::new();
        for caller in 0..account.callers {
            let pacer = Arc::new(Pacer::adaptive(8));
            let end = start
                + account
                    .stops
                    .get(caller)
                    .copied()
                    .flatten()
                    .unwrap_or(account.run);
            for worker in 0..8 {
                let (pacer, quota, spans, tallies) =
                    (pacer.clone(), quota.clone(), spans.clone(), tallies.clone());
                tasks.push(tokio::spawn(async move {
                    // Texts of 80 characters and 16 tokens, as many in a call as the pacer
                    // asks for, up to Cohere's 96 (so calls of up to 1,536 tokens).
                    let text = "x".repeat(80);
                    // Each worker's own draws (splitmix64), the same every run.
                    let mut seed = (caller * 8 + worker) as u64;
                    let mut draw = move || {
                        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                        let mut z = seed;
                        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                        z ^= z >> 31;
                        (z >> 11) as f64 / (1u64 << 53) as f64
                    };
                    let texts = vec![text.as_str(); 96];
                    while Instant::now() < end {
                        let n = pacer.texts_per_call(96, &texts) as u64;
                        let size = per_text * n;
                        let permit = pacer.acquire(80 * n as usize).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let draw = draw();
                        let (allowed, quota_hit) = {
                            let mut q = quota.lock().unwrap();
                            let (requests, tokens) = &mut *q;
                            // A refusal whatever the rate reads as the requests quota, as the
                            // stand-in's `--throttle-every` does.
                            if draw < account.refuse_share
                                || requests.as_mut().is_some_and(|b| !b.take(1.0))
                            {
                                (false, Quota::Requests)
                            } else if tokens.as_mut().is_some_and(|b| !b.take(size as f64)) {
                                (false, Quota::Tokens)
                            } else {
                                (true, Quota::Unknown)
                            }
                        };
                        let at = Instant::now() - start;
                        for (span, tally) in spans.iter().zip(tallies.lock().unwrap().iter_mut()) {
                            if span.0 <= at && at < span.1 {
                                if allowed {
                                    tally.ok += 1;
                                    tally.tokens += size;
                                    tally.by_caller[caller] += 1;
                                } else {
                                    tally.throttled += 1;
                                }
                            }
                        }
                        if allowed {
                            permit.succeeded(Some(size));
                        } else {
                            permit.throttled(quota_hit);
                        }
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let tallies = tallies.lock().unwrap().clone();
        for (span, t) in spans.iter().zip(&tallies) {
            let secs = (span.1 - span.0).as_secs_f64();
            println!(
                "  {:>4}-{:>4} s: {:>6.2} calls/s, {:>7.1} tokens/s, {:>4.1} % throttled, by container {:?}",
                span.0.as_secs(),
                span.1.as_secs(),
                t.ok as f64 / secs,
                t.tokens as f64 / secs,
                share(t.throttled, t.ok + t.throttled) * 100.0,
                t.by_caller
            );
        }
        tallies
    }

    fn share(part: u64, whole: u64) -> f64 {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64
        }
    }

    /// Once settled, under one call in ten throttled, and the shares converged: no container
    /// below half its part or above twice it.
    fn settled_fairly(settled: &Tally) {
        assert!(
            share(settled.throttled, settled.ok + settled.throttled) < 0.10,
            "{settled:?}"
        );
        let fair = settled.ok / settled.by_caller.len() as u64;
        assert!(
            settled
                .by_caller
                .iter()
                .all(|&n| n > fair / 2 && n < fair * 2),
            "{:?} of {}",
            settled.by_caller,
            settled.ok
        );
    }

    fn secs(from: u64, to: u64) -> (Duration, Duration) {
        (Duration::from_secs(from), Duration::from_secs(to))
    }

    #[tokio::test(start_paused = true)]
    async fn four_containers_settle_at_a_requests_quota() {
        println!("10 calls/s shared by 4 containers:");
        let spans = [secs(0, 300), secs(60, 300)];
        let t = run_account(
            Account {
                calls_per_second: Some(10.0),
                ..Account::default()
            },
            &spans,
        )
        .await;
        let (whole, settled) = (&t[0], &t[1]);
        assert!(whole.ok as f64 / 3000.0 > 0.9, "{whole:?}");
        settled_fairly(settled);
    }

    #[tokio::test(start_paused = true)]
    async fn four_containers_settle_at_a_tokens_quota_of_a_few_calls_a_minute() {
        // 30,000 tokens a minute, and calls of up to 1,536 tokens: at 96 texts a call, some
        // twenty calls a minute across four containers.
        println!("500 tokens/s shared by 4 containers:");
        let spans = [secs(0, 1200), secs(300, 1200)];
        let t = run_account(
            Account {
                tokens_per_second: Some(500.0),
                run: Duration::from_secs(1200),
                ..Account::default()
            },
            &spans,
        )
        .await;
        let (whole, settled) = (&t[0], &t[1]);
        assert!(whole.tokens as f64 / (500.0 * 1200.0) > 0.85, "{whole:?}");
        settled_fairly(settled);
    }

    #[tokio::test(start_paused = true)]
    async fn four_containers_at_a_tokens_quota_with_a_minute_of_burst() {
        // `bench quota`'s Cohere run: 12,000 tokens a minute, a minute of it at once, texts of
        // 45 tokens (Japanese) in calls of up to 96.
        println!("200 tokens/s shared by 4 containers, 60 s of burst, 45 tokens a text:");
        let spans = [
            secs(0, 600),
            secs(60, 600),
            secs(120, 600),
            secs(0, 15),
            secs(15, 30),
            secs(30, 60),
            secs(60, 90),
        ];
        let t = run_account(
            Account {
                tokens_per_second: Some(200.0),
                run: Duration::from_secs(600),
                burst_secs: 60.0,
                tokens_per_text: 45,
                ..Account::default()
            },
            &spans,
        )
        .await;
        let net = (t[0].tokens as f64 - 12_000.0) / (200.0 * 600.0);
        println!("{:.0} % of the quota net of the burst", net * 100.0);
        assert!(net > 0.9, "{net}");
        let settled = &t[1];
        let throttled = share(settled.throttled, settled.ok + settled.throttled);
        assert!(throttled < 0.1, "{throttled}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_share_of_containers_that_finished_is_taken_up() {
        println!("10 calls/s, two of four containers done at 150 s:");
        let spans = [secs(60, 150), secs(150, 200), secs(200, 300)];
        let t = run_account(
            Account {
                calls_per_second: Some(10.0),
                stops: vec![
                    Some(Duration::from_secs(150)),
                    Some(Duration::from_secs(150)),
                ],
                ..Account::default()
            },
            &spans,
        )
        .await;
        let after = &t[2];
        assert!(after.ok as f64 / 1000.0 > 0.85, "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_container_at_a_tokens_quota_takes_it_all_up() {
        // The end of a backfill: three containers have no work left at 150 s, the fourth holds
        // the last messages; at its share alone they would take four times as long.
        println!("200 tokens/s, 60 s of burst, three of four containers done at 150 s:");
        let spans = [
            secs(90, 150),
            secs(150, 165),
            secs(165, 180),
            secs(180, 240),
        ];
        let done = Some(Duration::from_secs(150));
        let t = run_account(
            Account {
                tokens_per_second: Some(200.0),
                run: Duration::from_secs(240),
                burst_secs: 60.0,
                tokens_per_text: 45,
                stops: vec![done, done, done],
                ..Account::default()
            },
            &spans,
        )
        .await;
        let taken_up = t[3].tokens as f64 / 60.0 / 200.0;
        println!(
            "{:.0} % of the quota 30-90 s after the others finished",
            taken_up * 100.0
        );
        assert!(taken_up > 0.8, "{:?}", t[3]);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_at_any_rate_are_not_taken_for_a_quota() {
        let spans = [secs(0, 120), secs(30, 120)];
        let account = |refuse_share| Account {
            run: Duration::from_secs(120),
            refuse_share,
            ..Account::default()
        };
        println!("no quota, nothing refused:");
        let free = run_account(account(0.0), &spans).await;
        println!("no quota, a third of the calls refused at random:");
        let refused = run_account(account(1.0 / 3.0), &spans).await;
        let kept = refused[0].ok as f64 / free[0].ok as f64;
        println!(
            "{:.0} % of the calls of the run with nothing refused",
            kept * 100.0
        );
        // Two calls in three get through: the pace keeps near that, far from its floor.
        assert!(kept > 0.6, "{kept}");
        assert!(
            refused[1].ok as f64 / free[1].ok as f64 > 0.6,
            "{refused:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_under_refusals_at_any_rate_is_still_kept() {
        println!("10 calls/s shared by 4 containers, a fifth of the calls refused anyway:");
        let spans = [secs(0, 300), secs(60, 300)];
        let t = run_account(
            Account {
                calls_per_second: Some(10.0),
                refuse_share: 0.2,
                ..Account::default()
            },
            &spans,
        )
        .await;
        let (whole, settled) = (&t[0], &t[1]);
        assert!(whole.ok as f64 / 3000.0 > 0.85, "{whole:?}");
        // The refusals are a fifth of the calls, and the quota's edge rides on them: a container
        // that knows the noise cuts only when the share rises clearly above it. Well under
        // half the calls, against nine in ten at the floor before noise was told apart.
        let throttled = share(settled.throttled, settled.ok + settled.throttled);
        assert!(throttled < 0.45, "{throttled}");
    }

    /// A chain that opened on a container's first call, refused, holds a share of one before
    /// its cut; the calls at the lowered rate, refused a third of the time, are judged against
    /// both samples' sizes, and the noise believed is the share of them all.
    #[test]
    fn a_chain_opened_on_one_refused_call_is_judged_by_both_samples() {
        let mut lane = Lane::new(
            "requests",
            LaneKind::REQUESTS,
            MIN_CALL_RATE,
            REQUESTS_RECOVER_SECS,
            Instant::now(),
        );
        lane.rate = Some(3.0);
        lane.chain = Some(Chain {
            limit: 8.0,
            sent: 4.0,
            high: (1, 1),
            low: (0, 0),
        });
        let verdicts: Vec<_> = (0..TEST_CALLS).map(|i| lane.outcome(i % 3 == 0)).collect();
        assert!(verdicts[..verdicts.len() - 1].iter().all(Option::is_none));
        assert_eq!(verdicts.last(), Some(&Some(Verdict::Noise { limit: 8.0 })));
        // 7 of 17 calls refused, not the 6 of 16 at the lowered rate alone.
        assert!((lane.noise - 7.0 / 17.0).abs() < 1e-9, "{}", lane.noise);
        // A quota shows itself: nothing refused at the lowered rate.
        lane.chain = Some(Chain {
            limit: 8.0,
            sent: 4.0,
            high: (1, 1),
            low: (0, 0),
        });
        lane.probation = None;
        lane.rate = Some(3.0);
        let last = (0..TEST_CALLS).map(|_| lane.outcome(false)).last();
        assert_eq!(last, Some(Some(Verdict::Quota)));
    }

    #[tokio::test(start_paused = true)]
    async fn without_throttling_concurrency_grows_to_the_ceiling() {
        let pacer = Pacer::adaptive(6);
        assert_eq!(pacer.report().concurrency, INITIAL_CONCURRENCY);
        for _ in 0..10 {
            // As many calls as the limit allows: it grows only while in use.
            let mut permits = Vec::new();
            for _ in 0..pacer.report().concurrency {
                permits.push(pacer.acquire(100).await);
            }
            tokio::time::advance(Duration::from_millis(10)).await;
            permits.into_iter().for_each(|p| p.succeeded(Some(25)));
        }
        assert_eq!(
            pacer.report(),
            PaceReport {
                concurrency: 6,
                rate: None,
                token_rate: None,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_halves_concurrency_and_paces_its_quota_once_for_the_calls_in_flight() {
        let pacer = Pacer::adaptive(8);
        for _ in 0..10 {
            let p = pacer.acquire(100).await;
            tokio::time::advance(Duration::from_millis(100)).await;
            p.succeeded(Some(25));
        }
        let before = pacer.report().concurrency;
        let permits = vec![pacer.acquire(100).await, pacer.acquire(100).await];
        for p in permits {
            p.throttled(Quota::Requests);
        }
        let after = pacer.report();
        assert_eq!(
            after.concurrency,
            (before / 2).max(1),
            "one cut for two throttles"
        );
        assert!(after.rate.is_some_and(|r| r > 0.0 && r < 10.0), "{after:?}");
        assert_eq!(after.token_rate, None, "the tokens quota did not throttle");

        let p = pacer.acquire(100).await;
        p.throttled(Quota::Tokens);
        let tokens = pacer.report().token_rate;
        assert!(tokens.is_some_and(|r| r > 0.0 && r < 250.0), "{tokens:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_tokens_throttle_paces_at_the_share_the_minute_let_through() {
        // A burst: 6,000 tokens in calls of 1,500 within a second, then "Too many tokens".
        let pacer = Pacer::adaptive(8);
        for _ in 0..4 {
            let p = pacer.acquire(6000).await;
            tokio::time::advance(Duration::from_millis(200)).await;
            p.succeeded(Some(1500));
        }
        let p = pacer.acquire(6000).await;
        tokio::time::advance(Duration::from_millis(200)).await;
        p.throttled(Quota::Tokens);
        // The minute let 6,000 through: a share of 100 tokens a second, started a cut below.
        let rate = pacer.report().token_rate.unwrap();
        assert!((rate - 100.0 * DECREASE).abs() < 1e-6, "{rate}");
        // The retry goes in a call of a few seconds of that pace, without first waiting for
        // the throttled call's 1,500 tokens (20 s at the pace).
        let n = pacer.texts_per_call(96, &["x".repeat(100).as_str(); 96]);
        assert!(n < 20, "{n} texts");
        let t0 = Instant::now();
        pacer.acquire(100 * n).await.succeeded(Some(25 * n as u64));
        assert!(
            Instant::now() - t0 <= Duration::from_secs(3),
            "{:?}",
            Instant::now() - t0
        );

        // Successes older than the window are no part of the share: a container that sent
        // 6,000 tokens long ago and one call since is cut from its own measurements.
        let pacer = Pacer::adaptive(8);
        let p = pacer.acquire(24_000).await;
        p.succeeded(Some(6000));
        tokio::time::advance(QUOTA_WINDOW).await;
        assert_eq!(
            pacer
                .state
                .lock()
                .unwrap()
                .first_token_share(Instant::now()),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_call_waits_longer_than_a_small_one_once_tokens_are_paced() {
        let pacer = Pacer::adaptive(8);
        // Teach the ratio: five characters a token.
        for _ in 0..40 {
            let p = pacer.acquire(5000).await;
            tokio::time::advance(Duration::from_millis(50)).await;
            p.succeeded(Some(1000));
        }
        let p = pacer.acquire(5000).await;
        p.throttled(Quota::Tokens);
        let rate = pacer.report().token_rate.unwrap();
        // The throttled call's own cost is owed first.
        let t0 = Instant::now();
        pacer.acquire(500).await.succeeded(Some(100));
        let small = Instant::now() - t0;
        let t1 = Instant::now();
        pacer.acquire(50_000).await.succeeded(Some(10_000));
        pacer.acquire(500).await.succeeded(Some(100));
        let after_large = Instant::now() - t1;
        assert!(
            after_large > small * 5,
            "{small:?} then {after_large:?} at {rate} tokens/s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_exhausted_for_a_minute_is_taken_up_again_within_a_few_calls() {
        let pacer = Pacer::adaptive(4);
        let call = |throttled: bool| {
            let pacer = &pacer;
            async move {
                let p = pacer.acquire(100).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                if throttled {
                    p.throttled(Quota::Requests);
                } else {
                    p.succeeded(Some(25));
                }
            }
        };
        // 20 calls a second, then another application takes the whole quota for a minute.
        for _ in 0..200 {
            call(false).await;
        }
        let end = Instant::now() + Duration::from_secs(60);
        let mut probes = 0;
        while Instant::now() < end {
            call(true).await;
            probes += 1;
        }
        let floor = pacer.report().rate.unwrap();
        let back = Instant::now();
        for _ in 0..10 {
            call(false).await;
        }
        let rate = pacer.report().rate.unwrap();
        println!(
            "{probes} probes in the minute, down to {floor:.2} calls/s; 10 calls later {rate:.1} calls/s, {:?} after the quota came back",
            Instant::now() - back
        );
        // A few calls a chain tell an exhausted quota from refusals at any rate.
        assert!(probes < 45, "{probes} calls throttled in a minute");
        assert!(rate > 10.0, "{rate} calls/s after 10 successes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_budget_paces_from_the_first_call() {
        let pacer = Pacer::adaptive(8).with_token_budget(100.0);
        let start = Instant::now();
        let mut tokens = 0;
        while Instant::now() - start < Duration::from_secs(60) {
            // 2,000 characters: 500 tokens by the first estimate, as Bedrock counts them too.
            pacer.acquire(2000).await.succeeded(Some(500));
            tokens += 500;
        }
        let per_second = tokens as f64 / (Instant::now() - start).as_secs_f64();
        assert!(
            (90.0..=110.0).contains(&per_second),
            "{per_second} tokens/s"
        );
        assert_eq!(pacer.report().token_rate, Some(100.0));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_carry_fewer_texts_once_tokens_are_paced() {
        let pacer = Pacer::adaptive(8);
        let texts = vec!["twenty characters!!!"; 200];
        assert_eq!(
            pacer.texts_per_call(96, &texts),
            96,
            "unpaced: the model's batch"
        );
        pacer.acquire(4000).await.throttled(Quota::Requests);
        assert_eq!(
            pacer.texts_per_call(96, &texts),
            96,
            "the requests quota: still whole"
        );
        let paced = Pacer::adaptive(8).with_token_budget(50.0);
        // 50 tokens a second for two seconds: 20 texts of five tokens.
        assert_eq!(paced.texts_per_call(96, &texts), 20);
        let long = vec!["a paragraph of two hundred characters ".repeat(5); 200];
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        assert_eq!(paced.texts_per_call(96, &long), 2, "never fewer than two");
        assert_eq!(paced.texts_per_call(1, &long), 1, "Titan: one text a call");
    }

    #[test]
    fn throttles_name_their_quota() {
        for (message, quota) in [
            (
                "Too many tokens, please wait before trying again.",
                Quota::Tokens,
            ),
            (
                "Too many tokens per day, please wait before trying again.",
                Quota::Tokens,
            ),
            (
                "Too many requests, please wait before trying again.",
                Quota::Requests,
            ),
            ("Rate exceeded", Quota::Unknown),
        ] {
            assert_eq!(Quota::of_message(message), quota, "{message}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_never_adapts() {
        let pacer = Pacer::fixed(3);
        let p = pacer.acquire(10).await;
        p.throttled(Quota::Unknown);
        assert_eq!(
            pacer.report(),
            PaceReport {
                concurrency: 3,
                rate: None,
                token_rate: None,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_given_up_is_not_counted_as_activity() {
        let pacer = Pacer::adaptive(1);
        let held = pacer.acquire(10).await;
        // Gives up while the only slot is taken.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), pacer.acquire(10)).await;
        assert!(gave_up.is_err());
        assert_eq!(pacer.state.lock().unwrap().waiting, 0);
        held.succeeded(None);
    }
}

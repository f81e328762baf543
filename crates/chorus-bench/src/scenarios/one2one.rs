//! One-to-one messaging at increasing rates. Senders pace chat messages to
//! their receivers' full JIDs; each body carries the step and the send time,
//! so receivers measure delivery latency. A step "holds" when at least
//! 99.9 % of its messages arrive, p99 stays under the limit and the senders
//! reached 90 % of the asked rate. After the first step that breaks, a few
//! more steps halve the interval between it and the last that held; the
//! highest step that holds is the maximum sustainable throughput, and a
//! final step at half of it gives the latency a server offers with
//! headroom. Each sender ticks at its own phase of the pacing period, so
//! messages arrive spread out, as independent users' would. With `--recv-addr` the receivers sit on
//! another node: cross-site delivery.

use crate::ServerArgs;
use crate::client::Session;
use crate::outcome::Outcome;
use crate::stats::{Latency, Sampler, now_us};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of the one-to-one scenario.
#[derive(clap::Args)]
pub struct Opts {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Sender/receiver pairs (accounts 0..2*PAIRS).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Receivers log in here instead (another node: cross-site delivery).
    #[arg(long)]
    pub recv_addr: Option<String>,
    /// Rates to try, in messages per second over all senders; the run stops
    /// at the first rate that does not hold.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "250,500,1000,2000,4000,8000,16000,32000,64000"
    )]
    pub rates: Vec<u64>,
    /// Seconds each rate is held.
    #[arg(long, default_value_t = 10)]
    pub step_secs: u64,
    /// After the first rate that does not hold, this many more steps halve
    /// the interval between it and the last rate that held, so a server
    /// between two listed rates is not reported at the lower one.
    #[arg(long, default_value_t = 2)]
    pub refine: usize,
    /// A step whose p99 delivery latency exceeds this does not hold.
    #[arg(long, default_value_t = 1000)]
    pub p99_limit_ms: u64,
    /// Name of the scenario in results.
    #[arg(long, default_value = "one2one")]
    pub name: String,
}

#[derive(Default)]
struct Step {
    received: u64,
    latency: Latency,
}

struct Shared {
    steps: Vec<Mutex<Step>>,
    errors: AtomicU64,
}

/// What one step measured.
struct StepResult {
    asked: f64,
    achieved: f64,
    delivered: f64,
    latency: Latency,
}

impl StepResult {
    fn holds(&self, p99_limit_ms: u64) -> bool {
        self.delivered >= 0.999
            && self.achieved >= 0.9 * self.asked
            && self.latency.summary().p99_ms <= p99_limit_ms as f64
    }
}

/// Runs the scenario.
pub async fn run(opts: &Opts) -> anyhow::Result<Outcome> {
    let server = &opts.server;
    let pairs = opts.pairs.max(1);
    let senders = super::login_all(server, 0..pairs, true).await?;
    let mut recv_server = server.clone();
    if let Some(addr) = &opts.recv_addr {
        recv_server.addr = addr.clone();
    }
    let receivers = super::login_all(&recv_server, pairs..2 * pairs, true).await?;
    let shared = Arc::new(Shared {
        steps: (0..=opts.rates.len() + opts.refine)
            .map(|_| Mutex::new(Step::default()))
            .collect(),
        errors: AtomicU64::new(0),
    });
    let to: Vec<String> = receivers.iter().map(|r| r.jid.clone()).collect();
    let mut drains = Vec::new();
    for r in receivers {
        drains.push(tokio::spawn(receive(r, shared.clone())));
    }
    let senders: Vec<Arc<Session>> = senders
        .into_iter()
        .map(|mut s| {
            drains.push(tokio::spawn(count_errors(s.take_rx(), shared.clone())));
            Arc::new(s)
        })
        .collect();
    // Let initial presence settle before the first step.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut o = Outcome::new(&opts.name);
    let sampler = Sampler::start(server.pid);
    let ctx = Ramp {
        opts,
        senders: &senders,
        to: &to,
        shared: &shared,
    };
    let best = ctx.find_max(&mut o).await;
    let usage = sampler.stop();
    o.usage(&usage);
    match best {
        Some(b) => {
            o.set("sustained_msgs_per_sec", b.achieved);
            o.latency("at_max_latency", &b.latency.summary());
            ctx.settle(&mut o).await;
            let half = b.achieved / 2.0;
            let h = step(opts, ctx.half_index(), half, &senders, &to, &shared).await;
            o.set("half_rate_msgs_per_sec", h.achieved);
            o.latency("latency", &h.latency.summary());
            if h.delivered < 0.999 {
                o.notes
                    .push(format!("at half rate only {:.2}% delivered", h.delivered * 100.0));
            }
        }
        None => o.notes.push("no rate held".into()),
    }
    o.errors = shared.errors.load(Ordering::Relaxed);
    drop(senders);
    for d in drains {
        d.abort();
    }
    Ok(o)
}

/// The steps of one run: the listed rates, then the refinement.
struct Ramp<'a> {
    opts: &'a Opts,
    senders: &'a [Arc<Session>],
    to: &'a [String],
    shared: &'a Arc<Shared>,
}

impl Ramp<'_> {
    /// The step slot of the final half-rate step.
    fn half_index(&self) -> usize {
        self.opts.rates.len() + self.opts.refine
    }

    /// Runs one step and reports it; returns it with whether it held.
    async fn run_step(&self, index: usize, rate: f64, o: &mut Outcome) -> (StepResult, bool) {
        let r = step(self.opts, index, rate, self.senders, self.to, self.shared).await;
        let s = r.latency.summary();
        eprintln!(
            "[{}] {} step {rate:.0}/s: achieved {:.0}/s, delivered {:.4}, p50 {:.2} ms, p99 {:.2} ms",
            self.opts.server.label, self.opts.name, r.achieved, r.delivered, s.p50_ms, s.p99_ms
        );
        let holds = r.holds(self.opts.p99_limit_ms);
        if !holds {
            o.notes.push(format!(
                "broke at {rate:.0}/s: achieved {:.0}/s, delivered {:.2}%, p99 {:.0} ms",
                r.achieved,
                r.delivered * 100.0,
                s.p99_ms
            ));
        }
        (r, holds)
    }

    /// The listed rates until one breaks, then [`Opts::refine`] steps
    /// halving the interval between the last that held and the first
    /// that broke. Returns the highest step that held.
    async fn find_max(&self, o: &mut Outcome) -> Option<StepResult> {
        let mut best: Option<StepResult> = None;
        let mut broke_at = None;
        for (i, rate) in self.opts.rates.iter().enumerate() {
            let (r, holds) = self.run_step(i, *rate as f64, o).await;
            if !holds {
                broke_at = Some(*rate as f64);
                break;
            }
            best = Some(r);
        }
        let (Some(mut bad), Some(_)) = (broke_at, &best) else {
            return best;
        };
        for k in 0..self.opts.refine {
            let good = best.as_ref().map_or(0.0, |b| b.asked);
            let rate = ((good + bad) / 2.0).round();
            if rate <= good || rate >= bad {
                break;
            }
            self.settle(o).await;
            let (r, holds) = self.run_step(self.opts.rates.len() + k, rate, o).await;
            if holds {
                best = Some(r);
            } else {
                bad = rate;
            }
        }
        best
    }

    /// A step that broke leaves a backlog: lets the server work it off so
    /// the next step starts from a quiet server.
    async fn settle(&self, o: &mut Outcome) {
        if let Some(pid) = self.opts.server.pid
            && !crate::stats::wait_quiet(pid, 0.1, Duration::from_secs(120)).await
        {
            o.notes
                .push("the server was still busy 120 s after a step that broke".into());
        }
    }
}

/// How often each sender sends what is due.
const TICK: Duration = Duration::from_millis(10);

/// Sends at `rate` messages per second for `step_secs`, then waits for the
/// messages to arrive (or for the drain timeout).
async fn step(
    opts: &Opts,
    index: usize,
    rate: f64,
    senders: &[Arc<Session>],
    to: &[String],
    shared: &Arc<Shared>,
) -> StepResult {
    let per_sender = rate / senders.len() as f64;
    let duration = Duration::from_secs(opts.step_secs);
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let n_senders = senders.len() as u32;
    for (i, (s, to)) in senders.iter().zip(to).enumerate() {
        let (s, to, sent) = (s.clone(), to.clone(), sent.clone());
        // Each sender ticks at its own phase of the 10 ms period, so the
        // messages arrive spread over it as many independent users' would,
        // not in one burst every 10 ms.
        let phase = TICK * i as u32 / n_senders;
        tasks.push(tokio::spawn(async move {
            let first = tokio::time::Instant::from_std(started) + phase;
            let mut tick = tokio::time::interval_at(first, TICK);
            let mut n = 0u64;
            loop {
                tick.tick().await;
                // The last tick tops up to exactly the step's share.
                let elapsed = started.elapsed().min(duration);
                let due = (per_sender * elapsed.as_secs_f64()).round() as u64;
                while n < due {
                    let xml = format!(
                        "<message to='{to}' type='chat' id='m{index}-{n}'><body>{index} {} one-to-one benchmark payload</body></message>",
                        now_us()
                    );
                    if s.send(xml).await.is_err() {
                        return;
                    }
                    n += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                if elapsed >= duration {
                    return;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let send_secs = started.elapsed().as_secs_f64().max(duration.as_secs_f64());
    let total = sent.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_millis((opts.p99_limit_ms * 3).max(10_000));
    loop {
        let got = shared.steps[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .received;
        if got >= total || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = shared.steps[index].lock().unwrap_or_else(|e| e.into_inner());
    StepResult {
        asked: rate,
        achieved: total as f64 / send_secs.max(1e-9),
        delivered: if total == 0 {
            0.0
        } else {
            st.received as f64 / total as f64
        },
        latency: st.latency.clone(),
    }
}

/// A receiver: records each benchmark message's latency under its step.
async fn receive(mut r: Session, shared: Arc<Shared>) {
    while let Some(el) = r.rx.recv().await {
        if el.name() != "message" {
            continue;
        }
        if el.attr("type") == Some("error") {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(body) = el.children().find(|c| c.name() == "body").map(|b| b.text()) else {
            continue;
        };
        let mut parts = body.split(' ');
        let (Some(Ok(step)), Some(Ok(ts))) = (
            parts.next().map(str::parse::<usize>),
            parts.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        if let Some(slot) = shared.steps.get(step) {
            let mut st = slot.lock().unwrap_or_else(|e| e.into_inner());
            st.received += 1;
            st.latency
                .record(Duration::from_micros(now_us().saturating_sub(ts)));
        }
    }
}

/// A sender's incoming stanzas: only errors matter (e.g. rate limits).
async fn count_errors(mut rx: tokio::sync::mpsc::Receiver<minidom::Element>, shared: Arc<Shared>) {
    while let Some(el) = rx.recv().await {
        if el.attr("type") == Some("error") {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

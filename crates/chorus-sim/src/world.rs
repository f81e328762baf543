//! The simulated world: nodes, a network with fault knobs, a workload, and
//! a fault schedule, all driven by one seeded [`Rng`] over virtual time.
//!
//! What is simulated is Chorus's replication and cross-node routing
//! protocol, using the production code's own pieces where they are pure:
//! the hybrid logical clock ([`Clock`]), last-writer-wins merging
//! ([`Lww::apply`]), anti-entropy buckets and digests ([`bucket_of`],
//! [`item_digest`]) and exactly-once intake ([`intake`]). Around them sits
//! a model of what `chorus-store` and `chorus-cluster` do with I/O: a
//! durable per-peer outbox with sequence numbers (push on accept, resend
//! everything unacknowledged on every new connection, drop on ack), a
//! persisted intake mark per origin, best-effort live replication of
//! register writes, periodic digest exchange, and the store's persisted
//! clock, restored on restart.
//!
//! Faults: node crashes (volatile state lost, durable state kept, the
//! clock may come back skewed), cuts between two nodes, isolation of a
//! node, millisecond blips, clock jumps, and per-message latency with
//! occasional long stalls. Connections are FIFO; a cut or crash drops
//! everything in flight on the connections it breaks (a TCP reset).

use crate::faults::{Bug, Fault, MAX_CLOCK_SKEW_MS, Params, schedule};
use crate::rng::Rng;
use chorus_cluster::directory::Directory;
use chorus_core::hlc::{Clock, Hlc, node_tag};
use chorus_core::lww::Lww;
use chorus_core::replication::{DIGEST_BUCKETS, bucket_of, intake, item_digest};
use chorus_proto::v1::{ResourceEntry, ResourceKey};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Wall-clock origin of every run (ms since the Unix epoch), far enough
/// from zero that skewed clocks stay positive.
const EPOCH_MS: u64 = 1_800_000_000_000;

/// How often a node flushes its outboxes and (re)connects its links.
const TICK_MS: u64 = 50;

/// Most stanzas sent per flush.
const BATCH: usize = 64;

/// How long a node keeps a silent peer's sessions.
const LEASE_MS: u64 = 1_500;

/// How long a sender takes to notice a silently dead connection (HTTP/2
/// keepalive).
const KEEPALIVE_MS: u64 = 3_000;

/// Users and resources per user the session workload uses.
const USERS: u64 = 8;
const RESOURCES: u64 = 2;

thread_local! {
    /// The clock reading of the node currently acting (set before every
    /// action; the simulation runs on one thread).
    static NOW: Cell<u64> = const { Cell::new(EPOCH_MS) };
}

fn sim_now() -> u64 {
    NOW.with(Cell::get)
}

/// A stanza a client had acknowledged: it must arrive exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked {
    /// Unique id (its payload).
    pub id: u64,
    /// Sending node.
    pub from: usize,
    /// Receiving node.
    pub to: usize,
}

/// One register write a client made.
#[derive(Clone, Debug)]
pub struct Write {
    /// Node written at.
    pub node: usize,
    /// Key.
    pub key: Vec<u8>,
    /// The register written.
    pub lww: Lww,
    /// True time of the write (ms since the epoch).
    pub true_ms: u64,
}

/// Everything the checkers look at.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Stanzas acknowledged to their senders.
    pub acked: Vec<Acked>,
    /// Per node, `(origin, id)` of every stanza delivered there, in order.
    pub delivered: Vec<Vec<(usize, u64)>>,
    /// Register writes, in the order they happened.
    pub writes: Vec<Write>,
    /// Local writes that did not win over what their node already held.
    pub stale_writes: Vec<String>,
    /// The faults injected, with their times.
    pub faults: Vec<(u64, Fault)>,
}

#[derive(Clone, Debug)]
enum Msg {
    Stanzas(Vec<(u64, u64)>),
    Ack(u64),
    Repl(Vec<(Vec<u8>, Lww)>),
    Digests(Vec<u64>),
    Items {
        items: Vec<(Vec<u8>, Lww)>,
        buckets: Vec<u32>,
        reply: bool,
    },
    /// (incarnation, connection number).
    Hello(u64, u64),
    Snapshot(Vec<ResourceEntry>),
    Delta(Vec<ResourceEntry>, Vec<ResourceKey>),
    Heartbeat,
}

#[derive(Clone, Debug)]
enum Ev {
    /// Deliver what is due on the connection from `from` to `to`.
    Pipe {
        from: usize,
        to: usize,
    },
    /// The kernel retransmits what a silently cut connection still held.
    Retransmit {
        from: usize,
        to: usize,
    },
    Write(usize),
    Send(usize),
    Tick(usize),
    AntiEntropy(usize),
    Fault(Fault),
    Restart {
        node: usize,
        skew_ms: i64,
    },
    Heal {
        a: usize,
        b: usize,
        silent: bool,
    },
    Session(usize),
    Resume(usize),
    Detect {
        a: usize,
        b: usize,
    },
}

struct Node {
    tag: u32,
    up: bool,
    skew_ms: i64,
    clock: Clock,
    // Durable.
    persisted_clock: Hlc,
    regs: BTreeMap<Vec<u8>, Lww>,
    outbox: Vec<BTreeMap<u64, u64>>,
    next_seq: Vec<u64>,
    marks: Vec<u64>,
    // Volatile.
    sent_upto: Vec<u64>,
    unspooled: Vec<(usize, u64)>,
    incarnation: u64,
    connections: u64,
    sessions: BTreeMap<(u64, u64), bool>,
    directory: Directory,
    /// The directory's stream number of each inbound connection, by
    /// (peer, epoch), and of each peer's newest one.
    streams: BTreeMap<(usize, u64), u64>,
    newest_stream: BTreeMap<usize, u64>,
}

/// One run of the simulation.
pub struct World {
    p: Params,
    rng: Rng,
    now: u64,
    next_event: u64,
    events: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
    cuts: Vec<Vec<u32>>,
    silent: Vec<Vec<u32>>,
    paused: Vec<u32>,
    /// Connections a silent cut killed whose data is still on its way.
    zombies: BTreeSet<(usize, usize, u64)>,
    base: Instant,
    connected: Vec<Vec<bool>>,
    epoch: Vec<Vec<u64>>,
    /// In-flight frames per direction: (arrival, connection epoch, frame).
    pipes: Vec<Vec<VecDeque<(u64, u64, Msg)>>>,
    /// Frames a silently cut connection still held: (epoch, frame).
    zombie_frames: Vec<Vec<Vec<(u64, Msg)>>>,
    next_id: u64,
    /// Events processed.
    pub steps: u64,
    /// What happened, for the checkers.
    pub history: History,
}

impl World {
    /// A world for `seed`, with its fault schedule drawn.
    pub fn new(seed: u64, p: Params) -> World {
        let mut rng = Rng::new(seed);
        let n = p.nodes;
        let nodes = (0..n)
            .map(|i| Node {
                tag: node_tag(&format!("n{i}")),
                up: true,
                skew_ms: 0,
                clock: Clock::with_time_source(node_tag(&format!("n{i}")), sim_now),
                persisted_clock: Hlc(0),
                regs: BTreeMap::new(),
                outbox: vec![BTreeMap::new(); n],
                next_seq: vec![0; n],
                marks: vec![0; n],
                sent_upto: vec![0; n],
                unspooled: Vec::new(),
                incarnation: i as u64 + 1,
                connections: 0,
                sessions: BTreeMap::new(),
                directory: Directory::default(),
                streams: BTreeMap::new(),
                newest_stream: BTreeMap::new(),
            })
            .collect();
        let faults = schedule(&mut rng, &p);
        let mut w = World {
            rng,
            now: 0,
            next_event: 0,
            events: BTreeMap::new(),
            nodes,
            cuts: vec![vec![0; n]; n],
            silent: vec![vec![0; n]; n],
            paused: vec![0; n],
            zombies: BTreeSet::new(),
            base: Instant::now(),
            connected: vec![vec![false; n]; n],
            epoch: vec![vec![0; n]; n],
            pipes: vec![vec![VecDeque::new(); n]; n],
            zombie_frames: vec![vec![Vec::new(); n]; n],
            next_id: 1,
            steps: 0,
            history: History {
                delivered: vec![Vec::new(); n],
                ..History::default()
            },
            p,
        };
        for i in 0..n {
            let (a, b, c, d) = (
                w.rng.range(0, 200),
                w.rng.range(0, 200),
                w.rng.range(0, TICK_MS),
                w.rng.range(0, 300),
            );
            w.at(a, Ev::Write(i));
            w.at(b, Ev::Send(i));
            w.at(c, Ev::Tick(i));
            w.at(d, Ev::AntiEntropy(i));
            let e = w.rng.range(0, 300);
            w.at(e, Ev::Session(i));
        }
        for (t, f) in faults {
            w.at(t, Ev::Fault(f));
        }
        w
    }

    /// Runs the workload and faults, then the settle period.
    pub fn run(&mut self) {
        let end = self.p.active_ms + self.p.settle_ms;
        while let Some(((t, _), ev)) = self.events.pop_first() {
            if t > end {
                break;
            }
            self.now = t;
            self.steps += 1;
            self.handle(ev);
        }
    }

    /// The node count.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A node's registers at the end.
    pub fn registers(&self, node: usize) -> &BTreeMap<Vec<u8>, Lww> {
        &self.nodes[node].regs
    }

    /// Stanzas still waiting in a node's outboxes.
    pub fn pending(&self, node: usize) -> usize {
        self.nodes[node].outbox.iter().map(BTreeMap::len).sum()
    }

    fn at(&mut self, delay: u64, ev: Ev) {
        self.next_event += 1;
        self.events.insert((self.now + delay, self.next_event), ev);
    }

    fn bug(&self, b: Bug) -> bool {
        self.p.bug == Some(b)
    }

    /// Points the thread's clock at node `n`'s (skewed) wall time.
    fn enter(&self, n: usize) {
        let t = (EPOCH_MS + self.now) as i64 + self.nodes[n].skew_ms;
        NOW.with(|c| c.set(t as u64));
    }

    /// Up and not paused.
    fn active(&self, n: usize) -> bool {
        self.nodes[n].up && self.paused[n] == 0
    }

    fn workload_on(&self) -> bool {
        self.now < self.p.active_ms
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Pipe { from, to } => {
                if self.cuts[from][to] + self.silent[from][to] > 0 {
                    // Held in the network (retransmitted); the heal
                    // delivers it, in order.
                    return;
                }
                while self.pipes[from][to]
                    .front()
                    .is_some_and(|(t, _, _)| *t <= self.now)
                {
                    let Some((_, epoch, msg)) = self.pipes[from][to].pop_front() else {
                        break;
                    };
                    let live = self.epoch[from][to] == epoch && self.connected[from][to];
                    if live || self.zombies.contains(&(from, to, epoch)) {
                        self.receive(from, to, epoch, msg);
                    }
                }
            }
            Ev::Resume(n) => self.paused[n] -= 1,
            Ev::Session(n) => self.recurring(n, (150, 1_200), Ev::Session(n), World::session_change),
            Ev::Detect { a, b } => {
                if self.silent[a][b] > 0 && self.connected[a][b] {
                    let e = self.epoch[a][b];
                    self.zombies.insert((a, b, e));
                    self.zombies.insert((b, a, e));
                    for (x, y) in [(a, b), (b, a)] {
                        let frames: Vec<(u64, u64, Msg)> = self.pipes[x][y].drain(..).collect();
                        self.zombie_frames[x][y].extend(frames.into_iter().map(|(_, e, m)| (e, m)));
                    }
                    self.disconnect(a, b);
                }
            }
            Ev::Retransmit { from, to } => {
                if self.cuts[from][to] + self.silent[from][to] > 0 {
                    return;
                }
                for (epoch, msg) in std::mem::take(&mut self.zombie_frames[from][to]) {
                    if self.zombies.contains(&(from, to, epoch)) {
                        self.receive(from, to, epoch, msg);
                    }
                }
            }
            Ev::Write(n) => self.recurring(n, (50, 400), Ev::Write(n), World::write),
            Ev::Send(n) => self.recurring(n, (20, 200), Ev::Send(n), World::accept_stanza),
            Ev::Tick(n) => {
                self.at(TICK_MS, Ev::Tick(n));
                if self.active(n) {
                    self.flush(n);
                    for m in 0..self.nodes.len() {
                        if m != n {
                            self.send(n, m, Msg::Heartbeat);
                        }
                    }
                    let now = self.instant();
                    self.nodes[n]
                        .directory
                        .expire(now, Duration::from_millis(LEASE_MS));
                }
            }
            Ev::AntiEntropy(n) => {
                let d = self.rng.range(200, 400);
                self.at(d, Ev::AntiEntropy(n));
                if self.active(n) {
                    let digests = self.digests(n);
                    for m in 0..self.nodes.len() {
                        if m != n {
                            self.send(n, m, Msg::Digests(digests.clone()));
                        }
                    }
                }
            }
            Ev::Fault(f) => self.inject(f),
            Ev::Restart { node, skew_ms } => {
                let nd = &mut self.nodes[node];
                nd.up = true;
                nd.skew_ms = skew_ms;
                // The store's open: a fresh clock that observes the
                // persisted reading.
                nd.clock = Clock::with_time_source(nd.tag, sim_now);
                nd.clock.observe(nd.persisted_clock);
                nd.incarnation += self.p.nodes as u64;
            }
            Ev::Heal { a, b, silent } => {
                let cuts = if silent { &mut self.silent } else { &mut self.cuts };
                cuts[a][b] -= 1;
                cuts[b][a] -= 1;
                if self.cuts[a][b] + self.silent[a][b] == 0 {
                    for (from, to) in [(a, b), (b, a)] {
                        self.at(0, Ev::Pipe { from, to });
                        if !self.zombie_frames[from][to].is_empty() {
                            // Retransmission backs off independently of
                            // any new connection.
                            let d = self.rng.range(1, 2_000);
                            self.at(d, Ev::Retransmit { from, to });
                        }
                    }
                }
            }
        }
    }

    /// A workload action at `n`, rescheduled `lo..hi` ms later while the
    /// workload runs; skipped while `n` is down.
    fn recurring(&mut self, n: usize, (lo, hi): (u64, u64), next: Ev, act: fn(&mut World, usize)) {
        if !self.workload_on() {
            return;
        }
        let d = self.rng.range(lo, hi);
        self.at(d, next);
        if self.active(n) {
            act(self, n);
        }
    }

    fn inject(&mut self, f: Fault) {
        self.history.faults.push((self.now, f.clone()));
        match f {
            Fault::Crash {
                node,
                down_ms,
                skew_ms,
            } => {
                if !self.nodes[node].up {
                    return;
                }
                let nd = &mut self.nodes[node];
                nd.up = false;
                nd.sent_upto.iter_mut().for_each(|s| *s = 0);
                nd.unspooled.clear();
                nd.sessions.clear();
                // The kernel resets the dead process's connections.
                self.zombies.retain(|(f, t, _)| *f != node && *t != node);
                self.refresh_all(node);
                self.at(down_ms, Ev::Restart { node, skew_ms });
            }
            Fault::Cut { a, b, ms, silent } => {
                if silent {
                    self.silent[a][b] += 1;
                    self.silent[b][a] += 1;
                    self.at(KEEPALIVE_MS.min(ms), Ev::Detect { a, b });
                } else {
                    self.cuts[a][b] += 1;
                    self.cuts[b][a] += 1;
                    self.refresh(a, b);
                }
                self.at(ms, Ev::Heal { a, b, silent });
            }
            Fault::Isolate { node, ms } => {
                for m in 0..self.nodes.len() {
                    if m != node {
                        self.cuts[node][m] += 1;
                        self.cuts[m][node] += 1;
                        self.refresh(node, m);
                        self.at(
                            ms,
                            Ev::Heal {
                                a: node,
                                b: m,
                                silent: false,
                            },
                        );
                    }
                }
            }
            Fault::ClockJump { node, skew_ms } => self.nodes[node].skew_ms = skew_ms,
            Fault::Poison { node, ahead_ms } => self.poison(node, ahead_ms),
            Fault::Pause { node, ms } => {
                // Like a silent cut of all its links (peers notice through
                // keepalives), plus its own timers stopping.
                self.paused[node] += 1;
                for m in (0..self.nodes.len()).filter(|m| *m != node) {
                    self.silent[node][m] += 1;
                    self.silent[m][node] += 1;
                    self.at(KEEPALIVE_MS.min(ms), Ev::Detect { a: node, b: m });
                    self.at(
                        ms,
                        Ev::Heal {
                            a: node,
                            b: m,
                            silent: true,
                        },
                    );
                }
                self.at(ms, Ev::Resume(node));
            }
        }
    }

    fn refresh_all(&mut self, n: usize) {
        for m in 0..self.nodes.len() {
            if m != n {
                self.refresh(n, m);
            }
        }
    }

    /// Brings the connection between `a` and `b` in line with the
    /// network: a break is seen at once (a reset); a new connection is
    /// made by the next flush.
    fn refresh(&mut self, a: usize, b: usize) {
        let both_up = self.nodes[a].up && self.nodes[b].up;
        if self.connected[a][b] {
            // A silent cut is noticed only by keepalives (`Ev::Detect`).
            if !both_up || self.cuts[a][b] > 0 {
                self.disconnect(a, b);
            }
            return;
        }
        if !both_up || self.cuts[a][b] + self.silent[a][b] > 0 {
            return;
        }
        self.connected[a][b] = true;
        self.connected[b][a] = true;
        self.epoch[a][b] += 1;
        self.epoch[b][a] += 1;
        // A new connection: each side resends all it has not had
        // acknowledged, and opens with its hello and a snapshot of its
        // sessions.
        for (x, y) in [(a, b), (b, a)] {
            self.nodes[x].sent_upto[y] = 0;
            self.nodes[x].connections += 1;
            let hello = Msg::Hello(self.nodes[x].incarnation, self.nodes[x].connections);
            self.send(x, y, hello);
            let snap = Msg::Snapshot(self.entries(x));
            self.send(x, y, snap);
        }
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        self.connected[a][b] = false;
        self.connected[b][a] = false;
        self.epoch[a][b] += 1;
        self.epoch[b][a] += 1;
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    fn entry(user: u64, resource: u64, available: bool) -> ResourceEntry {
        ResourceEntry {
            user: format!("u{user}"),
            resource: format!("r{resource}"),
            available,
            ..ResourceEntry::default()
        }
    }

    /// Node `n`'s sessions as directory entries.
    fn entries(&self, n: usize) -> Vec<ResourceEntry> {
        self.nodes[n]
            .sessions
            .iter()
            .map(|((u, r), a)| Self::entry(*u, *r, *a))
            .collect()
    }

    /// A client logs in, logs out or changes its availability at `n`.
    fn session_change(&mut self, n: usize) {
        let key = (self.rng.range(0, USERS), self.rng.range(0, RESOURCES));
        let gone = self.rng.chance(0.5);
        let sessions = &mut self.nodes[n].sessions;
        let delta = match sessions.get(&key).copied() {
            Some(_) if gone => {
                sessions.remove(&key);
                let k = ResourceKey {
                    user: format!("u{}", key.0),
                    resource: format!("r{}", key.1),
                };
                Msg::Delta(Vec::new(), vec![k])
            }
            Some(available) => {
                sessions.insert(key, !available);
                Msg::Delta(vec![Self::entry(key.0, key.1, !available)], Vec::new())
            }
            None => {
                sessions.insert(key, true);
                Msg::Delta(vec![Self::entry(key.0, key.1, true)], Vec::new())
            }
        };
        for m in 0..self.nodes.len() {
            if m != n {
                self.send(n, m, delta.clone());
            }
        }
    }

    /// What node `n`'s directory says `of` holds: (user, resource,
    /// available), sorted.
    pub fn directory_view(&self, n: usize, of: usize) -> Vec<(String, String, bool)> {
        let name = format!("n{of}");
        let mut v: Vec<(String, String, bool)> = (0..USERS)
            .flat_map(|u| self.nodes[n].directory.resources(&format!("u{u}")))
            .filter(|(node, _)| *node == name)
            .map(|(_, e)| (e.user, e.resource, e.available))
            .collect();
        v.sort();
        v
    }

    /// Node `n`'s own sessions, in the form of [`World::directory_view`].
    pub fn sessions_of(&self, n: usize) -> Vec<(String, String, bool)> {
        let mut v: Vec<(String, String, bool)> = self.nodes[n]
            .sessions
            .iter()
            .map(|((u, r), a)| (format!("u{u}"), format!("r{r}"), *a))
            .collect();
        v.sort();
        v
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if !self.connected[from][to] {
            return;
        }
        let mut latency = self.rng.range(1, 30);
        if self.rng.chance(0.01) {
            latency += self.rng.range(100, 400);
        }
        // Connections are FIFO: nothing overtakes what was sent before.
        let pipe = &mut self.pipes[from][to];
        let arrival = (self.now + latency).max(pipe.back().map_or(0, |(t, _, _)| *t));
        pipe.push_back((arrival, self.epoch[from][to], msg));
        self.at(arrival - self.now, Ev::Pipe { from, to });
    }

    fn write(&mut self, n: usize) {
        let key = format!("k{}", self.rng.range(0, self.p.keys as u64)).into_bytes();
        let id = self.next_id;
        self.next_id += 1;
        self.enter(n);
        let blind = self.bug(Bug::BlindLocalWrite);
        let nd = &mut self.nodes[n];
        // `RocksStore::write_local`: observe the version being replaced,
        // then tick.
        if let Some(held) = nd.regs.get(&key)
            && !blind
        {
            nd.clock.observe(held.version.hlc);
        }
        let version = nd.clock.tick();
        // `RocksStore::write_local` persists the clock with every write.
        nd.persisted_clock = nd.persisted_clock.max(version.hlc);
        let lww = Lww {
            version,
            value: Some(id.to_be_bytes().to_vec()),
        };
        if let Some(cur) = nd.regs.get(&key)
            && cur.version >= version
        {
            self.history.stale_writes.push(format!(
                "t={}ms n{n} wrote {} with {:?}, older than the {:?} it held",
                self.now,
                String::from_utf8_lossy(&key),
                version,
                cur.version
            ));
        }
        nd.regs.insert(key.clone(), lww.clone());
        self.history.writes.push(Write {
            node: n,
            key: key.clone(),
            lww: lww.clone(),
            true_ms: EPOCH_MS + self.now,
        });
        for m in 0..self.nodes.len() {
            if m != n {
                self.send(n, m, Msg::Repl(vec![(key.clone(), lww.clone())]));
            }
        }
    }

    fn accept_stanza(&mut self, n: usize) {
        let to = (n + 1 + self.rng.index(self.nodes.len() - 1)) % self.nodes.len();
        let id = self.next_id;
        self.next_id += 1;
        if self.bug(Bug::AckBeforeSpool) {
            self.nodes[n].unspooled.push((to, id));
        } else {
            self.spool(n, to, id);
        }
        self.history.acked.push(Acked { id, from: n, to });
    }

    fn spool(&mut self, n: usize, to: usize, id: u64) {
        let nd = &mut self.nodes[n];
        nd.next_seq[to] += 1;
        let seq = nd.next_seq[to];
        nd.outbox[to].insert(seq, id);
    }

    fn flush(&mut self, n: usize) {
        for (to, id) in std::mem::take(&mut self.nodes[n].unspooled) {
            self.spool(n, to, id);
        }
        for m in 0..self.nodes.len() {
            if m == n {
                continue;
            }
            self.refresh(n, m);
            if !self.connected[n][m] {
                continue;
            }
            let nd = &self.nodes[n];
            let batch: Vec<(u64, u64)> = nd.outbox[m]
                .range(nd.sent_upto[m] + 1..)
                .take(BATCH)
                .map(|(s, id)| (*s, *id))
                .collect();
            if let Some((last, _)) = batch.last() {
                self.nodes[n].sent_upto[m] = *last;
                self.send(n, m, Msg::Stanzas(batch));
            }
        }
    }

    fn receive(&mut self, from: usize, to: usize, epoch: u64, msg: Msg) {
        let now = self.instant();
        let peer = format!("n{from}");
        let fenced = !self.bug(Bug::NoStreamFence);
        let nd = &mut self.nodes[to];
        if let Msg::Hello(incarnation, connection) = msg {
            // Unfenced, every hello counts as the newest (the old code).
            let connection = if fenced { connection } else { u64::MAX };
            let (stream, _) = nd.directory.hello(&peer, &peer, (incarnation, connection), now);
            nd.streams.insert((from, epoch), stream);
            nd.newest_stream.insert(from, stream);
            return;
        }
        // The stream this connection's hello opened (`serve_link`).
        let stream = if fenced {
            nd.streams.get(&(from, epoch)).copied().unwrap_or(0)
        } else {
            nd.newest_stream.get(&from).copied().unwrap_or(0)
        };
        let dir = &nd.directory;
        // Every frame renews the sender's lease.
        dir.heard(&peer, stream, now);
        match msg {
            Msg::Hello(..) => {}
            Msg::Snapshot(entries) => {
                dir.snapshot(&peer, stream, entries);
            }
            Msg::Delta(up, down) => dir.delta(&peer, stream, up, down),
            Msg::Heartbeat => {}
            Msg::Stanzas(batch) => {
                let mark = if self.bug(Bug::NoIntakeMark) {
                    0
                } else {
                    self.nodes[to].marks[from]
                };
                let delivered = &mut self.history.delivered[to];
                let (mark, _) = intake(mark, batch, |id| delivered.push((from, id)));
                self.nodes[to].marks[from] = mark;
                self.send(to, from, Msg::Ack(mark));
            }
            Msg::Ack(upto) => {
                let outbox = &mut self.nodes[to].outbox[from];
                *outbox = outbox.split_off(&(upto + 1));
            }
            Msg::Repl(items) => self.apply_remote(to, items),
            Msg::Digests(theirs) => {
                let mine = self.digests(to);
                let buckets: Vec<u32> = (0..DIGEST_BUCKETS)
                    .filter(|b| mine[*b as usize] != theirs[*b as usize])
                    .collect();
                if !buckets.is_empty() {
                    self.send_items(to, from, buckets, true);
                }
            }
            Msg::Items {
                items,
                buckets,
                reply,
            } => {
                self.apply_remote(to, items);
                if reply {
                    self.send_items(to, from, buckets, false);
                }
            }
        }
    }

    /// Anti-entropy: sends `from`'s items in `buckets` to `to`, asking for
    /// `to`'s in return when `reply`.
    fn send_items(&mut self, from: usize, to: usize, buckets: Vec<u32>, reply: bool) {
        let items = self.items_in(from, &buckets);
        self.send(
            from,
            to,
            Msg::Items {
                items,
                buckets,
                reply,
            },
        );
    }

    /// Sends every peer of `n` an item versioned `ahead_ms` past true time.
    fn poison(&mut self, n: usize, ahead_ms: u64) {
        let key = format!("k{}", self.rng.range(0, self.p.keys as u64)).into_bytes();
        let millis = (EPOCH_MS + self.now)
            .saturating_add(ahead_ms)
            .min((u64::MAX >> 16) - 1);
        let lww = Lww {
            version: chorus_core::hlc::Version {
                hlc: Hlc::from_parts(millis, 0xffff),
                node: self.nodes[n].tag,
            },
            value: Some(b"poison".to_vec()),
        };
        for m in (0..self.nodes.len()).filter(|m| *m != n) {
            self.send(n, m, Msg::Repl(vec![(key.clone(), lww.clone())]));
        }
    }

    /// `RocksStore::apply_remote`: refuse what is too far ahead, observe,
    /// then merge by version.
    fn apply_remote(&mut self, n: usize, items: Vec<(Vec<u8>, Lww)>) {
        self.enter(n);
        let last_arrival_wins = self.bug(Bug::LastArrivalWins);
        let bounded = !self.bug(Bug::NoSkewBound);
        let nd = &mut self.nodes[n];
        for (key, lww) in items {
            if bounded && !nd.clock.admits(lww.version.hlc, MAX_CLOCK_SKEW_MS) {
                continue;
            }
            // Observed, but (as in the store) not persisted.
            nd.clock.observe(lww.version.hlc);
            if last_arrival_wins {
                nd.regs.insert(key, lww);
            } else {
                let (merged, _) = Lww::apply(nd.regs.remove(&key), lww);
                nd.regs.insert(key, merged);
            }
        }
    }

    fn digests(&self, n: usize) -> Vec<u64> {
        let mut d = vec![0u64; DIGEST_BUCKETS as usize];
        for (k, v) in &self.nodes[n].regs {
            d[bucket_of(k) as usize] ^= item_digest(k, v);
        }
        d
    }

    fn items_in(&self, n: usize, buckets: &[u32]) -> Vec<(Vec<u8>, Lww)> {
        self.nodes[n]
            .regs
            .iter()
            .filter(|(k, _)| buckets.contains(&bucket_of(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

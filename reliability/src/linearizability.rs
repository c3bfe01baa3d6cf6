//! A linearizability checker for histories of the store API (one ConfigMap
//! per key): the Wing–Gong–Lowe search as Porcupine and Knossos run it.
//!
//! A history is a set of [`Op`]s, each with the time its call was sent and
//! the time its answer came back. An operation whose outcome is unknown (a
//! timeout, a connection reset while the server was being killed) has no
//! return time: it may have taken effect at any point after its call, or
//! never, and the search is free to choose either.
//!
//! The history is linearizable when there is one total order of the
//! operations that (a) respects real time — an operation that returned
//! before another was called comes first — and (b) is a legal run of the
//! sequential model ([`KeyState`]): every answer is what a single copy of
//! the object would have given. Keys are independent objects, so each key's
//! sub-history is checked on its own (P-compositionality), which keeps the
//! search small.
//!
//! resourceVersions are global revisions, so the model cannot predict them;
//! it requires what Kubernetes promises: the rv of successive writes to a key
//! increases, a read returns the rv of the write whose value it returns, and
//! a conditional update succeeds exactly when its precondition names the
//! current rv. A write whose outcome is unknown leaves its rv unknown until a
//! read binds it.
//!
//! The search (Wing & Gong, with Lowe's memoization, as Porcupine does it)
//! walks a time-ordered list of call and return events, linearizing a
//! pending call when the model allows it and backtracking at a return whose
//! operation is not yet placed. A cache of (set of linearized operations,
//! model state) pairs already explored cuts the repeated subtrees; the set
//! is kept as a Zobrist hash so a step costs O(1) whatever the history's
//! length. An operation with an unknown outcome has its return at ∞, so it
//! never forces a backtrack; the search succeeds once every operation that
//! did answer is placed.
//!
//! The search is bounded ([`Limits::max_steps`]): a history too tangled to
//! decide in that many steps is reported as [`Verdict::Undecided`] rather
//! than hanging the suite.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// The identity of a written value. Every write in a history writes a value
/// of its own, so a read names the write it observed.
pub type Value = u64;

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    Get,
    Create {
        value: Value,
    },
    /// A PUT; `precondition` is the `metadata.resourceVersion` it carried
    /// (none: an unconditional update).
    Update {
        value: Value,
        precondition: Option<u64>,
    },
    Delete,
}

/// What the server answered (when it answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// A get found the object.
    Found {
        value: Value,
        rv: u64,
    },
    /// A create or update succeeded with this resourceVersion.
    Written {
        rv: u64,
    },
    /// A delete succeeded.
    Deleted,
    NotFound,
    AlreadyExists,
    /// An update's precondition (or its retries) failed.
    Conflict,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub input: Input,
    /// When the request was sent (any monotonic unit, e.g. nanoseconds).
    pub call: u64,
    /// When the answer came back and what it was; `None` when the outcome
    /// is unknown (the operation may or may not have taken effect).
    pub ret: Option<(u64, Output)>,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} {}: ", self.client, self.key)?;
        match self.input {
            Input::Get => write!(f, "get")?,
            Input::Create { value } => write!(f, "create v{value}")?,
            Input::Update {
                value,
                precondition: Some(p),
            } => write!(f, "update v{value} if rv={p}")?,
            Input::Update {
                value,
                precondition: None,
            } => write!(f, "update v{value}")?,
            Input::Delete => write!(f, "delete")?,
        }
        match self.ret {
            None => write!(f, " -> unknown [{}..∞]", self.call),
            Some((t, out)) => {
                let out = match out {
                    Output::Found { value, rv } => format!("v{value} rv={rv}"),
                    Output::Written { rv } => format!("ok rv={rv}"),
                    Output::Deleted => "ok".into(),
                    Output::NotFound => "NotFound".into(),
                    Output::AlreadyExists => "AlreadyExists".into(),
                    Output::Conflict => "Conflict".into(),
                };
                write!(f, " -> {out} [{}..{t}]", self.call)
            }
        }
    }
}

/// The resourceVersion of the current object in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rv {
    Known(u64),
    /// Written by an operation whose answer was lost: some revision above
    /// the key's floor, bound by the first read that shows it.
    Unknown,
}

/// The sequential model of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyState {
    /// The object: its value and resourceVersion.
    pub object: Option<(Value, Rv)>,
    /// The highest resourceVersion known to have been written to the key:
    /// every later write must return a higher one.
    pub floor: u64,
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.object {
            None => write!(f, "absent")?,
            Some((v, Rv::Known(rv))) => write!(f, "v{v} rv={rv}")?,
            Some((v, Rv::Unknown)) => write!(f, "v{v} rv=?")?,
        }
        write!(f, " (highest rv written {})", self.floor)
    }
}

impl KeyState {
    /// Whether the current rv may be `p` (binding an unknown one to it).
    fn rv_is(&self, p: u64) -> Option<KeyState> {
        match self.object {
            Some((_, Rv::Known(rv))) if rv == p => Some(*self),
            Some((v, Rv::Unknown)) if p > self.floor => Some(KeyState {
                object: Some((v, Rv::Known(p))),
                floor: p,
            }),
            _ => None,
        }
    }

    /// A write of `value` answered with `rv` (`None`: answer lost).
    fn written(&self, value: Value, rv: Option<u64>) -> Option<KeyState> {
        match rv {
            Some(rv) if rv > self.floor => Some(KeyState {
                object: Some((value, Rv::Known(rv))),
                floor: rv,
            }),
            Some(_) => None,
            None => Some(KeyState {
                object: Some((value, Rv::Unknown)),
                floor: self.floor,
            }),
        }
    }

    /// The state after `input` answered `output` (`None`: an operation
    /// with unknown outcome taking effect), or `None` when that answer is
    /// impossible in this state.
    pub fn step(&self, input: Input, output: Option<Output>) -> Option<KeyState> {
        let rv_of = |o: Option<Output>| match o {
            Some(Output::Written { rv }) => Ok(Some(rv)),
            None => Ok(None),
            Some(_) => Err(()),
        };
        match (input, output) {
            (Input::Get, Some(Output::Found { value, rv })) => match self.object {
                Some((v, _)) if v == value => self.rv_is(rv),
                _ => None,
            },
            (Input::Get, Some(Output::NotFound)) => self.object.is_none().then_some(*self),
            (Input::Get, _) => None,
            (Input::Create { .. }, Some(Output::AlreadyExists)) => {
                self.object.is_some().then_some(*self)
            }
            (Input::Create { value }, o) => {
                let rv = rv_of(o).ok()?;
                if self.object.is_some() {
                    return None;
                }
                self.written(value, rv)
            }
            (Input::Update { .. }, Some(Output::NotFound)) => {
                self.object.is_none().then_some(*self)
            }
            // An unconditional update answers Conflict only when its
            // internal retries all raced: nothing was written.
            (
                Input::Update {
                    precondition: None, ..
                },
                Some(Output::Conflict),
            ) => Some(*self),
            (
                Input::Update {
                    precondition: Some(p),
                    ..
                },
                Some(Output::Conflict),
            ) => match self.object {
                Some((_, Rv::Known(rv))) => (rv != p).then_some(*self),
                // Some other revision than `p`: always possible.
                Some((_, Rv::Unknown)) => Some(*self),
                None => None,
            },
            (
                Input::Update {
                    value,
                    precondition,
                },
                o,
            ) => {
                let rv = rv_of(o).ok()?;
                let current = match precondition {
                    Some(p) => self.rv_is(p)?,
                    None if self.object.is_some() => *self,
                    None => return None,
                };
                current.written(value, rv)
            }
            (Input::Delete, Some(Output::NotFound)) => self.object.is_none().then_some(*self),
            (Input::Delete, Some(Output::Deleted) | None) => {
                self.object.is_some().then_some(KeyState {
                    object: None,
                    floor: self.floor,
                })
            }
            (Input::Delete, _) => None,
        }
    }
}

/// Bounds on the search.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Search steps (tries to linearize an operation, backtracks) per key.
    pub max_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 2_000_000,
        }
    }
}

/// The verdict on one key's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists; the explanation names the operations where
    /// the longest legal prefix got stuck.
    NotLinearizable(String),
    /// The step bound ran out first.
    Undecided,
}

/// The verdict on one key.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub key: String,
    pub ops: usize,
    /// Operations whose outcome was unknown.
    pub unknown: usize,
    pub steps: u64,
    pub verdict: Verdict,
}

/// The verdict on a whole history, key by key.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub keys: Vec<KeyReport>,
}

impl Report {
    pub fn linearizable(&self) -> bool {
        self.keys.iter().all(|k| k.verdict == Verdict::Linearizable)
    }

    /// Keys with no linearization.
    pub fn violations(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys
            .iter()
            .filter(|k| matches!(k.verdict, Verdict::NotLinearizable(_)))
    }

    pub fn undecided(&self) -> usize {
        self.keys
            .iter()
            .filter(|k| k.verdict == Verdict::Undecided)
            .count()
    }

    pub fn ops(&self) -> usize {
        self.keys.iter().map(|k| k.ops).sum()
    }
}

/// Checks a history, one key at a time.
pub fn check(history: &[Op], limits: Limits) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    Report {
        keys: by_key
            .into_iter()
            .map(|(key, ops)| check_key(key, &ops, limits))
            .collect(),
    }
}

/// A set of operations (by index) that have been linearized.
#[derive(Debug, Clone)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: usize) -> Self {
        Bitset(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// A call or return event in the time-ordered doubly linked list the search
/// walks; lifting an operation unlinks both its events.
#[derive(Debug, Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// The list index of the other event of the same operation.
    partner: usize,
}

const NIL: usize = usize::MAX;

struct List {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// `next[head]` is the first event; the head itself is no event.
    head: usize,
}

impl List {
    fn lift(&mut self, call: usize) {
        for i in [call, self.events[call].partner] {
            let (p, n) = (self.prev[i], self.next[i]);
            self.next[p] = n;
            if n != NIL {
                self.prev[n] = p;
            }
        }
    }

    /// Undoes [`List::lift`]: the events go back where they were, the
    /// return first (it was unlinked last).
    fn unlift(&mut self, call: usize) {
        for i in [self.events[call].partner, call] {
            let (p, n) = (self.prev[i], self.next[i]);
            self.next[p] = i;
            if n != NIL {
                self.prev[n] = i;
            }
        }
    }
}

/// A fixed pseudo-random 128-bit word for operation `i` (two rounds of
/// SplitMix64).
fn zobrist(i: u64) -> u128 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let hi = mix(i.wrapping_mul(2));
    let lo = mix(i.wrapping_mul(2).wrapping_add(1));
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The deepest point the search reached: enough to explain a failure.
struct Deepest {
    order: Vec<usize>,
    state: KeyState,
}

fn check_key(key: &str, ops: &[&Op], limits: Limits) -> KeyReport {
    // A read whose answer was lost changed nothing and tells nothing.
    let ops: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| o.ret.is_some() || o.input != Input::Get)
        .collect();
    let n = ops.len();
    let unknown = ops.iter().filter(|o| o.ret.is_none()).count();
    let mut report = KeyReport {
        key: key.to_string(),
        ops: n,
        unknown,
        steps: 0,
        verdict: Verdict::Linearizable,
    };
    // Calls sort before returns at the same instant: the two operations
    // count as concurrent, which can only make the check more lenient.
    let mut stamped: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        stamped.push((o.call, false, i));
        stamped.push((o.ret.map_or(u64::MAX, |(t, _)| t), true, i));
    }
    stamped.sort_by_key(|&(t, is_return, i)| (t, is_return, i));
    let mut slot = vec![[NIL; 2]; n];
    for (pos, &(_, is_return, i)) in stamped.iter().enumerate() {
        slot[i][usize::from(is_return)] = pos;
    }
    let events: Vec<Event> = stamped
        .iter()
        .map(|&(_, is_return, i)| Event {
            op: i,
            is_call: !is_return,
            partner: slot[i][usize::from(!is_return)],
        })
        .collect();
    let len = events.len();
    if len == 0 {
        return report;
    }
    let head = len;
    let mut next: Vec<usize> = (1..=len).collect();
    next[len - 1] = NIL;
    next.push(0);
    let mut prev: Vec<usize> = (0..len)
        .map(|i| if i == 0 { head } else { i - 1 })
        .collect();
    prev.push(NIL);
    let mut list = List {
        events,
        next,
        prev,
        head,
    };

    let mut remaining_known = n - unknown;
    let mut state = KeyState::default();
    // The set of linearized operations, as a Zobrist hash (the XOR of a
    // random 128-bit word per member): updated in O(1) per step, and the
    // cache holds 16 bytes per entry instead of a bitset of the history.
    let words: Vec<u128> = (0..n as u64).map(zobrist).collect();
    let mut linearized: u128 = 0;
    let mut cache: HashSet<(u128, KeyState)> = HashSet::new();
    let mut calls: Vec<(usize, KeyState)> = Vec::new();
    let mut deepest = Deepest {
        order: Vec::new(),
        state,
    };
    let mut entry = list.next[list.head];
    while remaining_known > 0 {
        report.steps += 1;
        if report.steps > limits.max_steps {
            report.verdict = Verdict::Undecided;
            return report;
        }
        let event = (entry != NIL).then(|| list.events[entry]);
        match event {
            Some(ev) if ev.is_call => {
                let op = ops[ev.op];
                if let Some(after) = state.step(op.input, op.ret.map(|(_, o)| o)) {
                    linearized ^= words[ev.op];
                    if cache.insert((linearized, after)) {
                        calls.push((entry, state));
                        state = after;
                        if op.ret.is_some() {
                            remaining_known -= 1;
                        }
                        list.lift(entry);
                        if calls.len() > deepest.order.len() {
                            deepest = Deepest {
                                order: calls.iter().map(|&(e, _)| list.events[e].op).collect(),
                                state,
                            };
                        }
                        entry = list.next[list.head];
                        continue;
                    }
                    linearized ^= words[ev.op];
                }
                entry = list.next[entry];
            }
            // A return: its operation should have been linearized by now.
            _ => {
                let Some((call, before)) = calls.pop() else {
                    report.verdict = Verdict::NotLinearizable(explain(&ops, &deepest));
                    return report;
                };
                let op = list.events[call].op;
                linearized ^= words[op];
                state = before;
                if ops[op].ret.is_some() {
                    remaining_known += 1;
                }
                list.unlift(call);
                entry = list.next[call];
            }
        }
    }
    report
}

/// The operations around the point where the longest legal order got
/// stuck: its last few steps, the state there, and the operation that had
/// to come next (the earliest-returning one left) with every operation
/// concurrent with it, each with why it cannot be next.
fn explain(ops: &[&Op], deepest: &Deepest) -> String {
    const CONTEXT: usize = 5;
    let mut out = String::new();
    let placed = deepest.order.len();
    out.push_str(&format!(
        "the longest legal order places {placed} of {} operations; its last steps:\n",
        ops.len()
    ));
    for &i in &deepest.order[placed.saturating_sub(CONTEXT)..] {
        out.push_str(&format!("    {}\n", ops[i]));
    }
    out.push_str(&format!("  state then: {}\n", deepest.state));
    let mut done = Bitset::new(ops.len());
    for &i in &deepest.order {
        done.set(i);
    }
    let left: Vec<usize> = (0..ops.len()).filter(|&i| !done.get(i)).collect();
    let first_return = left
        .iter()
        .filter_map(|&i| ops[i].ret.map(|(t, _)| (t, i)))
        .min();
    let Some((deadline, stuck)) = first_return else {
        return out;
    };
    out.push_str(&format!(
        "  must come next, before it returned: {}\n  but from that state:\n",
        ops[stuck]
    ));
    for &i in left.iter().filter(|&&i| ops[i].call <= deadline) {
        let verdict = match deepest.state.step(ops[i].input, ops[i].ret.map(|(_, o)| o)) {
            None => "impossible".to_string(),
            Some(s) => format!("possible, leads to {s}"),
        };
        out.push_str(&format!("    {} — {verdict}\n", ops[i]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K: &str = "k";

    fn op(client: usize, input: Input, call: u64, ret: u64, out: Output) -> Op {
        Op {
            client,
            key: K.into(),
            input,
            call,
            ret: Some((ret, out)),
        }
    }

    fn lost(client: usize, input: Input, call: u64) -> Op {
        Op {
            client,
            key: K.into(),
            input,
            call,
            ret: None,
        }
    }

    fn create(v: Value) -> Input {
        Input::Create { value: v }
    }
    fn update(v: Value, p: Option<u64>) -> Input {
        Input::Update {
            value: v,
            precondition: p,
        }
    }
    fn found(v: Value, rv: u64) -> Output {
        Output::Found { value: v, rv }
    }
    fn written(rv: u64) -> Output {
        Output::Written { rv }
    }

    fn verdict(h: &[Op]) -> Verdict {
        let r = check(h, Limits::default());
        assert!(r.keys.len() <= 1);
        r.keys
            .into_iter()
            .next()
            .map_or(Verdict::Linearizable, |k| k.verdict)
    }

    fn assert_linearizable(h: &[Op]) {
        assert_eq!(verdict(h), Verdict::Linearizable, "{h:#?}");
    }

    fn assert_violation(h: &[Op]) -> String {
        match verdict(h) {
            Verdict::NotLinearizable(why) => why,
            other => panic!("expected a violation, got {other:?} for {h:#?}"),
        }
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_linearizable(&[]);
        assert_linearizable(&[
            op(0, Input::Get, 0, 1, Output::NotFound),
            op(0, create(1), 2, 3, written(10)),
            op(0, Input::Get, 4, 5, found(1, 10)),
            op(0, update(2, Some(10)), 6, 7, written(12)),
            op(0, update(3, Some(10)), 8, 9, Output::Conflict),
            op(0, update(4, None), 10, 11, written(15)),
            op(0, Input::Delete, 12, 13, Output::Deleted),
            op(0, Input::Delete, 14, 15, Output::NotFound),
            op(0, update(5, None), 16, 17, Output::NotFound),
            op(0, create(6), 18, 19, written(20)),
            op(0, create(7), 20, 21, Output::AlreadyExists),
        ]);
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        // The read overlaps the create and sees it; a second read overlaps
        // both and sees nothing (linearized before the create).
        assert_linearizable(&[
            op(0, create(1), 0, 10, written(5)),
            op(1, Input::Get, 2, 4, found(1, 5)),
            op(2, Input::Get, 1, 12, Output::NotFound),
        ]);
        // Two concurrent conditional updates on one rv: one wins, the other
        // conflicts, whichever returned first.
        assert_linearizable(&[
            op(0, create(1), 0, 1, written(5)),
            op(1, update(2, Some(5)), 2, 10, Output::Conflict),
            op(2, update(3, Some(5)), 3, 8, written(7)),
            op(0, Input::Get, 11, 12, found(3, 7)),
        ]);
    }

    #[test]
    fn unknown_writes_that_happened_are_linearizable() {
        // The create's answer was lost but a later read sees it (and binds
        // its rv); a conditional update on that rv then succeeds.
        assert_linearizable(&[
            lost(0, create(1), 0),
            op(1, Input::Get, 5, 6, found(1, 9)),
            op(1, update(2, Some(9)), 7, 8, written(11)),
            op(1, Input::Get, 9, 10, found(2, 11)),
        ]);
        // A lost delete that took effect explains a NotFound.
        assert_linearizable(&[
            op(0, create(1), 0, 1, written(3)),
            lost(1, Input::Delete, 2),
            op(0, Input::Get, 5, 6, Output::NotFound),
        ]);
        // A lost write may take effect long after its call: the first read
        // still sees the old value, the second the new one.
        assert_linearizable(&[
            op(0, create(1), 0, 1, written(3)),
            lost(1, update(2, None), 2),
            op(0, Input::Get, 5, 6, found(1, 3)),
            op(0, Input::Get, 7, 8, found(2, 20)),
        ]);
    }

    #[test]
    fn unknown_writes_that_never_happened_are_linearizable() {
        assert_linearizable(&[
            op(0, create(1), 0, 1, written(3)),
            lost(1, update(2, Some(3)), 2),
            lost(1, Input::Delete, 3),
            lost(2, create(9), 3),
            op(0, Input::Get, 5, 6, found(1, 3)),
            op(0, update(4, Some(3)), 7, 8, written(10)),
        ]);
    }

    #[test]
    fn stale_read_after_an_acknowledged_write_is_a_violation() {
        let why = assert_violation(&[
            op(0, create(1), 0, 1, written(3)),
            op(0, update(2, None), 2, 3, written(4)),
            op(1, Input::Get, 4, 5, found(1, 3)),
        ]);
        assert!(why.contains("client 1 k: get -> v1 rv=3"), "{why}");
        assert!(why.contains("impossible"), "{why}");
        // Reading NotFound after an acknowledged create, too.
        assert_violation(&[
            op(0, create(1), 0, 1, written(3)),
            op(1, Input::Get, 2, 3, Output::NotFound),
        ]);
    }

    #[test]
    fn lost_update_is_a_violation() {
        // Two conditional updates on the same rv both succeed.
        assert_violation(&[
            op(0, create(1), 0, 1, written(3)),
            op(1, update(2, Some(3)), 2, 6, written(4)),
            op(2, update(3, Some(3)), 2, 6, written(5)),
        ]);
        // An acknowledged update vanishes: the read after it sees the
        // value it replaced.
        assert_violation(&[
            op(0, create(1), 0, 1, written(3)),
            op(1, update(2, Some(3)), 2, 3, written(4)),
            op(0, Input::Get, 4, 5, found(1, 3)),
        ]);
    }

    #[test]
    fn resource_version_going_backwards_is_a_violation() {
        assert_violation(&[
            op(0, create(1), 0, 1, written(7)),
            op(0, update(2, None), 2, 3, written(5)),
        ]);
        // Across a delete and re-create, too.
        assert_violation(&[
            op(0, create(1), 0, 1, written(7)),
            op(0, Input::Delete, 2, 3, Output::Deleted),
            op(0, create(2), 4, 5, written(6)),
        ]);
        // A read reporting another rv than the write it returns.
        assert_violation(&[
            op(0, create(1), 0, 1, written(7)),
            op(0, Input::Get, 2, 3, found(1, 8)),
        ]);
    }

    #[test]
    fn two_acknowledged_creates_are_a_violation() {
        assert_violation(&[
            op(0, create(1), 0, 5, written(3)),
            op(1, create(2), 1, 6, written(4)),
        ]);
        // Even with a lost delete between them, unless it could fall
        // between: here both creates returned before it was called.
        assert_violation(&[
            op(0, create(1), 0, 5, written(3)),
            op(1, create(2), 1, 6, written(4)),
            lost(2, Input::Delete, 7),
        ]);
        assert_linearizable(&[
            op(0, create(1), 0, 5, written(3)),
            op(1, create(2), 1, 6, written(4)),
            lost(2, Input::Delete, 2),
        ]);
    }

    #[test]
    fn a_conflict_needs_another_revision() {
        assert_violation(&[
            op(0, create(1), 0, 1, written(3)),
            op(1, update(2, Some(3)), 2, 3, Output::Conflict),
        ]);
        assert_violation(&[op(0, update(2, Some(3)), 0, 1, Output::Conflict)]);
    }

    #[test]
    fn keys_are_checked_separately() {
        let mut h = vec![
            op(0, create(1), 0, 1, written(3)),
            op(1, Input::Get, 2, 3, Output::NotFound),
        ];
        h[1].key = "other".into();
        let r = check(&h, Limits::default());
        assert!(r.linearizable());
        assert_eq!(r.keys.len(), 2);
        h.push(op(1, Input::Get, 4, 5, Output::NotFound));
        let r = check(&h, Limits::default());
        assert_eq!(
            r.violations().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            [K]
        );
    }

    #[test]
    fn the_step_bound_gives_undecided_not_a_hang() {
        let mut h = vec![op(0, create(1), 0, 1, written(3))];
        for i in 0..40 {
            h.push(lost(i + 1, update(100 + i as u64, None), 2));
        }
        // Impossible: forces the whole subset space to be searched.
        h.push(op(0, Input::Get, 10, 11, found(1, 2)));
        let r = check(&h, Limits { max_steps: 10_000 });
        assert_eq!(r.keys[0].verdict, Verdict::Undecided);
    }

    /// A plain reference store (not the checker's model): a map with a
    /// global revision counter, as both backends behave.
    #[derive(Default)]
    struct Reference {
        revision: u64,
        objects: BTreeMap<String, (Value, u64)>,
    }

    impl Reference {
        fn apply(&mut self, key: &str, input: Input) -> Output {
            let cur = self.objects.get(key).copied();
            match (input, cur) {
                (Input::Get, Some((v, rv))) => Output::Found { value: v, rv },
                (Input::Get, None) => Output::NotFound,
                (Input::Create { .. }, Some(_)) => Output::AlreadyExists,
                (Input::Create { value }, None) => {
                    self.revision += 1;
                    self.objects.insert(key.into(), (value, self.revision));
                    Output::Written { rv: self.revision }
                }
                (Input::Update { .. }, None) | (Input::Delete, None) => Output::NotFound,
                (
                    Input::Update {
                        precondition: Some(p),
                        ..
                    },
                    Some((_, rv)),
                ) if p != rv => Output::Conflict,
                (Input::Update { value, .. }, Some(_)) => {
                    self.revision += 1;
                    self.objects.insert(key.into(), (value, self.revision));
                    Output::Written { rv: self.revision }
                }
                (Input::Delete, Some(_)) => {
                    self.revision += 1;
                    self.objects.remove(key);
                    Output::Deleted
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Histories from a real sequential execution, each operation's
        /// interval stretched at random around its instant (so they
        /// overlap), some answers lost: always linearizable.
        #[test]
        fn histories_of_a_real_store_are_linearizable(
            steps in proptest::collection::vec(
                (0u8..3, 0u8..5, 0u8..3, 0u16..400, 0u16..400, proptest::bool::weighted(0.08), any::<bool>()),
                1..120,
            ),
        ) {
            let mut store = Reference::default();
            let mut history = Vec::new();
            for (i, &(key, kind, pre, before, after, is_lost, took_effect)) in
                steps.iter().enumerate()
            {
                let key = format!("k{key}");
                let value = i as u64 + 1;
                let current_rv = store.objects.get(&key).map_or(0, |&(_, rv)| rv);
                let input = match kind {
                    0 => Input::Get,
                    1 => Input::Create { value },
                    2 => Input::Update {
                        value,
                        // The current rv, a stale one, or none.
                        precondition: match pre {
                            0 => Some(current_rv),
                            1 => Some(current_rv.saturating_sub(1)),
                            _ => None,
                        },
                    },
                    3 => Input::Update { value, precondition: Some(current_rv) },
                    _ => Input::Delete,
                };
                let at = 1_000 + 100 * i as u64;
                let call = at - u64::from(before);
                let ret = at + u64::from(after);
                if is_lost {
                    if took_effect {
                        store.apply(&key, input);
                    }
                    history.push(Op { client: i, key, input, call, ret: None });
                } else {
                    let out = store.apply(&key, input);
                    history.push(Op { client: i, key, input, call, ret: Some((ret, out)) });
                }
            }
            let r = check(&history, Limits::default());
            for k in &r.keys {
                prop_assert_eq!(&k.verdict, &Verdict::Linearizable, "key {}", k.key);
            }
        }
    }
}

//! A linearizability checker for histories of a key-value store: the Wing & Gong search with
//! Lowe's memoization (the algorithm of Knossos' `wgl` and of porcupine), P-compositional per key.
//!
//! A history is a list of [`KvOperation`]s, each with the moment it was invoked and the moment it
//! completed (`None`: never, or with an unknown outcome). It is linearizable if every operation
//! can be given one instant between its invocation and its completion such that, taken in that
//! order, the operations are a legal run of a register per key. An operation whose outcome is
//! unknown (a timed-out write) may take effect at any instant after its invocation, or never —
//! which is the same as taking effect after everything else.
//!
//! The search (Lowe, "Testing for linearizability", 2017, after Wing & Gong 1993): walk the
//! history's invocations and completions in time order; at an invocation, try to linearize that
//! operation next (the model must accept it from the current state), remembering the choice on a
//! stack; at a completion whose operation is not yet linearized, backtrack. A set of
//! (linearized operations, state) pairs already explored prunes the search (memoization), and
//! each key is checked on its own (P-compositionality: a history is linearizable if and only if
//! every key's sub-history is).
//!
//! ```
//! use raftor_sim::linearizability::{check_kv, KvInput, KvOperation, KvOutput};
//! let history = vec![
//!     KvOperation::new(1, "k", KvInput::Put("a".into()), Some(KvOutput::Written), 0, Some(1)),
//!     KvOperation::new(2, "k", KvInput::Get, Some(KvOutput::Value(None)), 2, Some(3)),
//! ];
//! // The read began after the write completed: it cannot miss it.
//! assert!(!check_kv(&history).is_linearizable());
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::Hash;

/// A sequential specification: the states an object can be in, and which operations (with their
/// observed outputs) are legal in a state.
pub trait Model {
    /// The object's state. Hashed for memoization, so keep it small.
    type State: Clone + Eq + Hash + fmt::Debug;
    /// An operation together with its observed output (or the fact that it is unknown).
    type Op;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `op` when it is applied in `state`, or `None` if `op` (with the output it
    /// was observed to return) is not possible there.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One operation of a history for [`check`]: the operation, when it was invoked and when it
/// completed. Times only need to be ordered: any two distinct events must have distinct times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed<Op> {
    pub op: Op,
    pub call: u64,
    /// `None`: the operation never completed (its outcome is unknown); it may take effect at any
    /// time after `call`, or not at all.
    pub ret: Option<u64>,
}

/// Whether a (sub-)history is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<S> {
    /// A linearization exists; here it is, as indices into the history.
    Linearizable { order: Vec<usize> },
    /// No linearization exists. What the search got furthest with, for a readable report.
    Violation(Box<Counterexample<S>>),
    /// The search gave up after its step budget: no verdict.
    Inconclusive { steps: u64 },
}

/// The best the search could do on a history that is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample<S> {
    /// The longest prefix of a linearization found: indices into the history, in order.
    pub longest_prefix: Vec<usize>,
    /// The state after that prefix.
    pub state: S,
    /// The operations that were pending at that point (invoked, not yet linearized, and able
    /// to go next by real time) — none of them can be linearized next, or every choice among
    /// them leads to a dead end.
    pub stuck: Vec<usize>,
    /// The operation whose completion forced the search back: it completed before it could be
    /// linearized.
    pub deadline: usize,
}

/// A search budget large enough for every history the tests produce, small enough to end.
pub const DEFAULT_MAX_STEPS: u64 = 20_000_000;

const NIL: usize = usize::MAX;

/// Node 2i of the search's list is operation i's invocation, node 2i+1 its completion.
fn is_call(node: usize) -> bool {
    node & 1 == 0
}

/// A set of operation indices.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(len: usize) -> BitSet {
        BitSet(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks one history against `model` with the WGL search (no partitioning: see [`check_kv`]).
pub fn check<M: Model>(model: &M, history: &[Timed<M::Op>], max_steps: u64) -> Verdict<M::State> {
    let n = history.len();
    if n == 0 {
        return Verdict::Linearizable { order: Vec::new() };
    }
    // Events: node 2i is operation i's call, 2i+1 its return, in time order; calls before
    // returns at equal times (a caller error, tolerated), unknown returns last.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, timed) in history.iter().enumerate() {
        events.push((timed.call, 0, 2 * i));
        let ret = timed.ret.unwrap_or(u64::MAX).max(timed.call);
        events.push((ret, 1, 2 * i + 1));
    }
    events.sort_unstable();
    // A doubly linked list over the nodes, with a head sentinel at index 2n.
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = head;
    for &(_, _, node) in &events {
        next[last] = node;
        prev[node] = last;
        last = node;
    }
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, call: usize| {
        for node in [call, call + 1] {
            let (p, q) = (prev[node], next[node]);
            next[p] = q;
            if q != NIL {
                prev[q] = p;
            }
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, call: usize| {
        for node in [call + 1, call] {
            let (p, q) = (prev[node], next[node]);
            next[p] = node;
            if q != NIL {
                prev[q] = node;
            }
        }
    };

    let mut state = model.init();
    let mut linearized = BitSet::new(n);
    let mut cache: HashSet<(BitSet, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut best: Option<Counterexample<M::State>> = None;
    let mut entry = next[head];
    let mut steps = 0u64;
    while next[head] != NIL {
        steps += 1;
        if steps > max_steps {
            return Verdict::Inconclusive { steps };
        }
        if is_call(entry) {
            let op = entry / 2;
            if let Some(new_state) = model.step(&state, &history[op].op) {
                linearized.set(op);
                if cache.insert((linearized.clone(), new_state.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, new_state)));
                    lift(&mut next, &mut prev, entry);
                    entry = next[head];
                    continue;
                }
                linearized.clear(op);
            }
            entry = next[entry];
        } else {
            // A completion of an operation not linearized yet: everything tried since the last
            // choice failed. Remember how far this got, then undo the last choice.
            if best
                .as_ref()
                .is_none_or(|b| stack.len() > b.longest_prefix.len())
            {
                let mut stuck = Vec::new();
                let mut node = next[head];
                while node != NIL && is_call(node) {
                    stuck.push(node / 2);
                    node = next[node];
                }
                best = Some(Counterexample {
                    longest_prefix: stack.iter().map(|(call, _)| call / 2).collect(),
                    state: state.clone(),
                    stuck,
                    deadline: entry / 2,
                });
            }
            let Some((call, previous)) = stack.pop() else {
                let best = best.unwrap_or_else(|| Counterexample {
                    longest_prefix: Vec::new(),
                    state: model.init(),
                    stuck: Vec::new(),
                    deadline: entry / 2,
                });
                return Verdict::Violation(Box::new(best));
            };
            linearized.clear(call / 2);
            state = previous;
            unlift(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Verdict::Linearizable {
        order: stack.iter().map(|(call, _)| call / 2).collect(),
    }
}

/// An operation on one key of the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Set the key to a value.
    Put(String),
    /// Read the key (linearizably: the test's claim under scrutiny).
    Get,
    /// Set the key to `value` if it holds `expected` (`None`: if it is absent).
    Cas {
        expected: Option<String>,
        value: String,
    },
    /// Remove the key.
    Delete,
}

/// What an operation was observed to return.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// A put or delete took effect.
    Written,
    /// A read saw this value (`None`: absent).
    Value(Option<String>),
    /// A compare-and-swap happened.
    Swapped,
    /// A compare-and-swap did not happen; the key held `current`.
    Mismatch { current: Option<String> },
}

/// One operation of a key-value history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvOperation {
    /// Which client ran it (for the report only).
    pub client: u64,
    pub key: String,
    pub input: KvInput,
    /// `None`: unknown (a write that timed out, or whose node stopped before answering).
    pub output: Option<KvOutput>,
    /// When it was invoked and completed. Only the order matters to the checker; every event of
    /// a history must have its own time (a recorder hands out increasing numbers).
    pub call: u64,
    /// `None`: never completed; with an unknown output it may take effect any time after `call`.
    pub ret: Option<u64>,
    /// The moment of the invocation and completion for people, e.g. virtual microseconds; not
    /// used by the checker.
    pub call_at: u64,
    pub ret_at: Option<u64>,
}

impl KvOperation {
    /// An operation whose display times are its ordering times.
    pub fn new(
        client: u64,
        key: &str,
        input: KvInput,
        output: Option<KvOutput>,
        call: u64,
        ret: Option<u64>,
    ) -> KvOperation {
        KvOperation {
            client,
            key: key.to_owned(),
            input,
            output,
            call,
            ret,
            call_at: call,
            ret_at: ret,
        }
    }
}

/// A register (one key): the value, `None` when absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Register;

impl Model for Register {
    type State = Option<String>;
    type Op = (KvInput, Option<KvOutput>);

    fn init(&self) -> Option<String> {
        None
    }

    fn step(&self, state: &Option<String>, (input, output): &Self::Op) -> Option<Option<String>> {
        match (input, output) {
            (KvInput::Put(value), None | Some(KvOutput::Written)) => Some(Some(value.clone())),
            (KvInput::Delete, None | Some(KvOutput::Written)) => Some(None),
            (KvInput::Get, None) => Some(state.clone()),
            (KvInput::Get, Some(KvOutput::Value(seen))) => (seen == state).then(|| state.clone()),
            (KvInput::Cas { expected, value }, None) => Some(if state == expected {
                Some(value.clone())
            } else {
                state.clone()
            }),
            (KvInput::Cas { expected, value }, Some(KvOutput::Swapped)) => {
                (state == expected).then(|| Some(value.clone()))
            }
            (KvInput::Cas { expected, .. }, Some(KvOutput::Mismatch { current })) => {
                (state != expected && state == current).then(|| state.clone())
            }
            // An output that does not fit the operation is never legal.
            _ => None,
        }
    }
}

/// The verdict on a whole key-value history, key by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCheck {
    /// Per key: the verdict on its sub-history, whose indices are into `positions[key]`.
    pub keys: BTreeMap<String, Verdict<Option<String>>>,
    /// Per key: the positions in the whole history of that key's operations.
    pub positions: BTreeMap<String, Vec<usize>>,
}

impl KvCheck {
    /// Every key's sub-history is linearizable (so the history is).
    pub fn is_linearizable(&self) -> bool {
        self.keys
            .values()
            .all(|v| matches!(v, Verdict::Linearizable { .. }))
    }

    /// Some key's sub-history is not linearizable.
    pub fn has_violation(&self) -> bool {
        self.keys
            .values()
            .any(|v| matches!(v, Verdict::Violation(_)))
    }

    /// The keys the search gave up on.
    pub fn inconclusive(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Inconclusive { .. }))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Checks a key-value history: each key's operations against a [`Register`], on their own.
pub fn check_kv(history: &[KvOperation]) -> KvCheck {
    check_kv_with_budget(history, DEFAULT_MAX_STEPS)
}

/// [`check_kv`] with a search budget per key.
///
/// Before the search, each key's history drops what can always go last: reads whose outcome is
/// unknown, and writes (puts) with an unknown outcome whose value nobody observed (no read saw it,
/// no compare-and-swap expected it or reported it). Such a write can be linearized after
/// everything else, where it changes nothing anyone saw; and any linearization that places it
/// earlier stays one without it (the operations until the next write could not have observed
/// it, and a timed-out compare-and-swap among them may move to the end too). Values must be
/// unique per put for this to be exact, as a checker's workload makes them. The dropped
/// operations are appended to a linearizable key's `order`.
pub fn check_kv_with_budget(history: &[KvOperation], max_steps: u64) -> KvCheck {
    let mut positions: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        positions.entry(op.key.clone()).or_default().push(i);
    }
    let keys = positions
        .iter()
        .map(|(key, at)| {
            let observed: HashSet<&str> = at
                .iter()
                .flat_map(|&i| {
                    let op = &history[i];
                    let seen = match &op.output {
                        Some(KvOutput::Value(Some(v)))
                        | Some(KvOutput::Mismatch { current: Some(v) }) => Some(v.as_str()),
                        _ => None,
                    };
                    let expected = match &op.input {
                        KvInput::Cas {
                            expected: Some(v), ..
                        } => Some(v.as_str()),
                        _ => None,
                    };
                    seen.into_iter().chain(expected)
                })
                .collect();
            let goes_last = |i: usize| {
                let op = &history[i];
                op.output.is_none()
                    && op.ret.is_none()
                    && match &op.input {
                        KvInput::Get => true,
                        KvInput::Put(v) => !observed.contains(v.as_str()),
                        _ => false,
                    }
            };
            let (last, searched): (Vec<usize>, Vec<usize>) =
                (0..at.len()).partition(|&j| goes_last(at[j]));
            let sub: Vec<Timed<(KvInput, Option<KvOutput>)>> = searched
                .iter()
                .map(|&j| {
                    let op = &history[at[j]];
                    Timed {
                        op: (op.input.clone(), op.output.clone()),
                        call: op.call,
                        ret: op.ret,
                    }
                })
                .collect();
            let to_key = |indices: Vec<usize>| -> Vec<usize> {
                indices.into_iter().map(|i| searched[i]).collect()
            };
            let verdict = match check(&Register, &sub, max_steps) {
                Verdict::Linearizable { order } => {
                    let mut order = to_key(order);
                    order.extend(&last);
                    Verdict::Linearizable { order }
                }
                Verdict::Violation(c) => Verdict::Violation(Box::new(Counterexample {
                    longest_prefix: to_key(c.longest_prefix),
                    state: c.state,
                    stuck: to_key(c.stuck),
                    deadline: searched[c.deadline],
                })),
                Verdict::Inconclusive { steps } => Verdict::Inconclusive { steps },
            };
            (key.clone(), verdict)
        })
        .collect();
    KvCheck { keys, positions }
}

impl fmt::Display for KvInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvInput::Put(value) => write!(f, "put {value:?}"),
            KvInput::Get => write!(f, "get"),
            KvInput::Cas { expected, value } => {
                write!(f, "cas {} -> {value:?}", show(expected.as_deref()))
            }
            KvInput::Delete => write!(f, "delete"),
        }
    }
}

fn show(value: Option<&str>) -> String {
    value.map_or("(absent)".to_owned(), |v| format!("{v:?}"))
}

impl fmt::Display for KvOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOutput::Written => write!(f, "ok"),
            KvOutput::Value(value) => write!(f, "{}", show(value.as_deref())),
            KvOutput::Swapped => write!(f, "swapped"),
            KvOutput::Mismatch { current } => {
                write!(f, "mismatch, held {}", show(current.as_deref()))
            }
        }
    }
}

/// Times for people: `unit` per tick of `call_at`/`ret_at` (e.g. "µs").
fn at(time: Option<u64>) -> String {
    time.map_or("      ?".to_owned(), |t| format!("{t:>7}"))
}

/// A readable report of a history and its verdict: per key, every operation in invocation order
/// with its interval, client, operation and output; for a key that is not linearizable, the
/// longest linearizable prefix found (numbered), the state after it, the operations stuck there,
/// and the one whose completion made it a dead end. `unit` names the display times.
pub fn render(history: &[KvOperation], check: &KvCheck, unit: &str) -> String {
    render_with(history, check, unit, None)
}

/// [`render`] for the keys that are not linearizable only, and around the violation only: the
/// last `context` operations of the longest linearizable prefix, and every operation whose
/// interval overlaps the span from the first of those to the completion that made the search a
/// dead end.
pub fn render_violations(
    history: &[KvOperation],
    check: &KvCheck,
    unit: &str,
    context: usize,
) -> String {
    render_with(history, check, unit, Some(context))
}

fn render_with(
    history: &[KvOperation],
    check: &KvCheck,
    unit: &str,
    focus: Option<usize>,
) -> String {
    let mut out = String::new();
    for (key, verdict) in &check.keys {
        let positions = &check.positions[key];
        let (label, prefix, stuck, deadline, state) = match verdict {
            Verdict::Linearizable { order } => ("linearizable", order.clone(), vec![], None, None),
            Verdict::Violation(c) => (
                "NOT LINEARIZABLE",
                c.longest_prefix.clone(),
                c.stuck.clone(),
                Some(c.deadline),
                Some(c.state.clone()),
            ),
            Verdict::Inconclusive { .. } => ("inconclusive", vec![], vec![], None, None),
        };
        let op = |i: usize| &history[positions[i]];
        // The span shown: everything, or around the violation.
        let (from, to) = match (focus, deadline) {
            (None, _) => (0, u64::MAX),
            (Some(_), None) => continue,
            (Some(context), Some(d)) => {
                let first = prefix
                    .len()
                    .checked_sub(context.max(1))
                    .map_or(0, |start| op(prefix[start]).call);
                (first.min(op(d).call), op(d).ret.unwrap_or(u64::MAX))
            }
        };
        let mut order: Vec<usize> = (0..positions.len())
            .filter(|&i| op(i).call <= to && op(i).ret.is_none_or(|ret| ret >= from))
            .collect();
        order.sort_by_key(|&i| (op(i).call, i));
        let _ = writeln!(
            out,
            "key {key:?}: {} operations, {label}{}",
            positions.len(),
            if order.len() < positions.len() {
                format!(" (showing the {} around the violation)", order.len())
            } else {
                String::new()
            }
        );
        for i in order {
            let op = op(i);
            let output = op
                .output
                .as_ref()
                .map_or("? (unknown outcome)".to_owned(), ToString::to_string);
            let mut note = String::new();
            if let Some(place) = prefix.iter().position(|&p| p == i) {
                let _ = write!(note, "  [linearized #{}]", place + 1);
            }
            if stuck.contains(&i) {
                note.push_str("  [pending, cannot go next]");
            }
            if deadline == Some(i) {
                note.push_str("  <== completed before it could be linearized");
            }
            let _ = writeln!(
                out,
                "  {}{unit} .. {}{unit}  c{:<3} {:<28} -> {output}{note}",
                at(Some(op.call_at)),
                at(op.ret_at),
                op.client,
                op.input.to_string(),
            );
        }
        if let Some(state) = state {
            let _ = writeln!(
                out,
                "  after the longest linearizable prefix ({} operations) the key holds {}",
                prefix.len(),
                show(state.as_deref())
            );
        }
    }
    out
}

fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_value(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => json_string(out, v),
        None => out.push_str("null"),
    }
}

fn json_time(out: &mut String, time: Option<u64>) {
    match time {
        Some(t) => {
            let _ = write!(out, "{t}");
        }
        None => out.push_str("null"),
    }
}

/// The history as JSON, one operation per line in an array: `{"client", "key", "op", "value",
/// "expected", "output", "output_value", "call", "ret", "call_at", "ret_at"}` (null for unknown).
pub fn to_json(history: &[KvOperation]) -> String {
    let mut out = String::from("[\n");
    for (i, op) in history.iter().enumerate() {
        let _ = write!(out, "  {{\"client\": {}, \"key\": ", op.client);
        json_string(&mut out, &op.key);
        let (name, value, expected) = match &op.input {
            KvInput::Put(v) => ("put", Some(v.as_str()), None),
            KvInput::Get => ("get", None, None),
            KvInput::Cas { expected, value } => ("cas", Some(value.as_str()), Some(expected)),
            KvInput::Delete => ("delete", None, None),
        };
        let _ = write!(out, ", \"op\": \"{name}\", \"value\": ");
        json_value(&mut out, value);
        if let Some(expected) = expected {
            out.push_str(", \"expected\": ");
            json_value(&mut out, expected.as_deref());
        }
        out.push_str(", \"output\": ");
        match &op.output {
            None => out.push_str("null"),
            Some(KvOutput::Written) => out.push_str("\"ok\""),
            Some(KvOutput::Swapped) => out.push_str("\"swapped\""),
            Some(KvOutput::Value(v)) => {
                out.push_str("\"value\", \"output_value\": ");
                json_value(&mut out, v.as_deref());
            }
            Some(KvOutput::Mismatch { current }) => {
                out.push_str("\"mismatch\", \"output_value\": ");
                json_value(&mut out, current.as_deref());
            }
        }
        let _ = write!(out, ", \"call\": {}, \"ret\": ", op.call);
        json_time(&mut out, op.ret);
        let _ = write!(out, ", \"call_at\": {}, \"ret_at\": ", op.call_at);
        json_time(&mut out, op.ret_at);
        out.push('}');
        if i + 1 < history.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(client, input, output, call, ret)` of one operation on key "x".
    type Row = (u64, KvInput, Option<KvOutput>, u64, Option<u64>);

    /// A history on key "x".
    fn history(ops: &[Row]) -> Vec<KvOperation> {
        ops.iter()
            .map(|(client, input, output, call, ret)| {
                KvOperation::new(*client, "x", input.clone(), output.clone(), *call, *ret)
            })
            .collect()
    }

    fn put(v: &str) -> KvInput {
        KvInput::Put(v.into())
    }
    fn cas(expected: Option<&str>, value: &str) -> KvInput {
        KvInput::Cas {
            expected: expected.map(Into::into),
            value: value.into(),
        }
    }
    fn read(v: Option<&str>) -> Option<KvOutput> {
        Some(KvOutput::Value(v.map(Into::into)))
    }
    const OK: Option<KvOutput> = Some(KvOutput::Written);

    fn linearizable(ops: &[Row]) -> bool {
        let h = history(ops);
        let check = check_kv(&h);
        assert!(check.inconclusive().is_empty());
        if let Some(Verdict::Linearizable { order }) = check.keys.get("x") {
            // The order found is a legal sequential run that respects real time.
            let mut state = None;
            for (n, &i) in order.iter().enumerate() {
                state = Register
                    .step(&state, &(h[i].input.clone(), h[i].output.clone()))
                    .expect("a legal step");
                for &j in &order[n + 1..] {
                    assert!(
                        h[j].ret.is_none_or(|ret| ret > h[i].call),
                        "{j} completed before {i} began but is ordered after it"
                    );
                }
            }
            assert_eq!(order.len(), h.len());
        }
        check.is_linearizable()
    }

    #[test]
    fn sequential_histories() {
        assert!(linearizable(&[]));
        assert!(linearizable(&[
            (1, put("a"), OK, 0, Some(1)),
            (1, KvInput::Get, read(Some("a")), 2, Some(3)),
            (1, cas(Some("a"), "b"), Some(KvOutput::Swapped), 4, Some(5)),
            (
                1,
                cas(Some("a"), "c"),
                Some(KvOutput::Mismatch {
                    current: Some("b".into())
                }),
                6,
                Some(7)
            ),
            (1, KvInput::Delete, OK, 8, Some(9)),
            (1, KvInput::Get, read(None), 10, Some(11)),
        ]));
        // A read of a value never written, a stale read, a CAS that "swapped" the wrong value.
        assert!(!linearizable(&[(
            1,
            KvInput::Get,
            read(Some("z")),
            0,
            Some(1)
        )]));
        assert!(!linearizable(&[
            (1, put("a"), OK, 0, Some(1)),
            (1, put("b"), OK, 2, Some(3)),
            (2, KvInput::Get, read(Some("a")), 4, Some(5)),
        ]));
        assert!(!linearizable(&[
            (1, put("a"), OK, 0, Some(1)),
            (1, cas(Some("b"), "c"), Some(KvOutput::Swapped), 2, Some(3)),
        ]));
        // A mismatch must report what the key held.
        assert!(!linearizable(&[
            (1, put("a"), OK, 0, Some(1)),
            (
                1,
                cas(Some("b"), "c"),
                Some(KvOutput::Mismatch { current: None }),
                2,
                Some(3)
            ),
        ]));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // put a and put b overlap; a read after both may see either, but two reads after both
        // must agree, and a read that saw b then a read that saw a needs a write in between.
        let writes = [
            (1, put("a"), OK, 0, Some(10)),
            (2, put("b"), OK, 1, Some(11)),
        ];
        for seen in ["a", "b"] {
            let mut ops = writes.to_vec();
            ops.push((3, KvInput::Get, read(Some(seen)), 12, Some(13)));
            assert!(linearizable(&ops), "{seen}");
        }
        let mut ops = writes.to_vec();
        ops.push((3, KvInput::Get, read(Some("b")), 12, Some(13)));
        ops.push((3, KvInput::Get, read(Some("a")), 14, Some(15)));
        assert!(!linearizable(&ops));
        // A read concurrent with a write may see the old or the new value...
        let old_or_new = |seen: Option<&str>| {
            linearizable(&[
                (1, put("a"), OK, 0, Some(1)),
                (1, put("b"), OK, 2, Some(6)),
                (2, KvInput::Get, read(seen), 3, Some(5)),
            ])
        };
        assert!(old_or_new(Some("a")) && old_or_new(Some("b")) && !old_or_new(None));
        // ...but once one read saw the new value, a later read cannot see the old one.
        assert!(!linearizable(&[
            (1, put("a"), OK, 0, Some(1)),
            (1, put("b"), OK, 2, Some(20)),
            (2, KvInput::Get, read(Some("b")), 3, Some(5)),
            (3, KvInput::Get, read(Some("a")), 6, Some(8)),
        ]));
        // Two concurrent CASes from the same expected value: only one may swap.
        let race = |first: Option<KvOutput>, second: Option<KvOutput>| {
            linearizable(&[
                (1, put("0"), OK, 0, Some(1)),
                (1, cas(Some("0"), "1"), first, 2, Some(10)),
                (2, cas(Some("0"), "2"), second, 3, Some(11)),
            ])
        };
        let swapped = Some(KvOutput::Swapped);
        let lost_to = |v: &str| {
            Some(KvOutput::Mismatch {
                current: Some(v.into()),
            })
        };
        assert!(race(swapped.clone(), lost_to("1")));
        assert!(race(lost_to("2"), swapped.clone()));
        assert!(!race(swapped.clone(), swapped));
        assert!(!race(lost_to("2"), lost_to("1")));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_take_effect() {
        // A write that timed out may have happened...
        assert!(linearizable(&[
            (1, put("a"), None, 0, None),
            (2, KvInput::Get, read(Some("a")), 5, Some(6)),
        ]));
        // ...or not...
        assert!(linearizable(&[
            (1, put("a"), None, 0, None),
            (2, KvInput::Get, read(None), 5, Some(6)),
        ]));
        // ...but only once, and not before it was invoked.
        assert!(!linearizable(&[
            (1, put("a"), None, 0, None),
            (2, KvInput::Get, read(Some("a")), 5, Some(6)),
            (2, put("b"), OK, 7, Some(8)),
            (2, KvInput::Get, read(Some("b")), 9, Some(10)),
            (2, KvInput::Get, read(Some("a")), 11, Some(12)),
        ]));
        assert!(!linearizable(&[
            (2, KvInput::Get, read(Some("a")), 0, Some(1)),
            (1, put("a"), None, 2, None),
        ]));
        // A timed-out CAS swaps only if the value matched where it is linearized.
        assert!(linearizable(&[
            (1, put("0"), OK, 0, Some(1)),
            (1, cas(Some("0"), "1"), None, 2, None),
            (2, KvInput::Get, read(Some("1")), 3, Some(4)),
        ]));
        assert!(!linearizable(&[
            (1, put("0"), OK, 0, Some(1)),
            (1, cas(Some("9"), "1"), None, 2, None),
            (2, KvInput::Get, read(Some("1")), 3, Some(4)),
        ]));
        // Many unknown writes overlapping everything: still decided (memoization).
        let mut ops = vec![(0, put("start"), OK, 0, Some(1))];
        for i in 0..40 {
            ops.push((i + 1, put(&format!("v{i}")), None, 2 + i, None));
        }
        ops.push((99, KvInput::Get, read(Some("v7")), 100, Some(101)));
        ops.push((99, KvInput::Get, read(Some("v3")), 102, Some(103)));
        ops.push((99, KvInput::Get, read(Some("v7")), 104, Some(105)));
        assert!(!linearizable(&ops), "v7 cannot be written twice");
        ops.pop();
        assert!(linearizable(&ops));
    }

    #[test]
    fn keys_are_checked_on_their_own() {
        let mut h = history(&[(1, put("a"), OK, 0, Some(1))]);
        h.push(KvOperation::new(
            2,
            "y",
            KvInput::Get,
            read(Some("a")),
            2,
            Some(3),
        ));
        let check = check_kv(&h);
        assert!(matches!(check.keys["x"], Verdict::Linearizable { .. }));
        assert!(matches!(check.keys["y"], Verdict::Violation(_)));
        assert!(check.has_violation() && !check.is_linearizable());
        assert_eq!(check.positions["y"], vec![1]);
    }

    #[test]
    fn a_violation_is_explained() {
        let h = history(&[
            (1, put("a"), OK, 0, Some(1)),
            (1, put("b"), OK, 2, Some(3)),
            (2, KvInput::Get, read(Some("a")), 4, Some(5)),
        ]);
        let check = check_kv(&h);
        let Verdict::Violation(c) = &check.keys["x"] else {
            panic!("a stale read: {check:?}");
        };
        assert_eq!(c.longest_prefix, vec![0, 1]);
        assert_eq!(c.state.as_deref(), Some("b"));
        assert_eq!(c.deadline, 2);
        assert_eq!(c.stuck, vec![2]);
        let text = render(&h, &check, "us");
        assert!(text.contains("NOT LINEARIZABLE"), "{text}");
        assert!(text.contains("[linearized #2]"), "{text}");
        assert!(
            text.contains("completed before it could be linearized"),
            "{text}"
        );
        assert!(text.contains("the key holds \"b\""), "{text}");
        let focused = render_violations(&h, &check, "us", 1);
        assert!(
            focused.contains("(showing the 2 around the violation)"),
            "{focused}"
        );
        assert!(!focused.contains("put \"a\""), "{focused}");
        let json = to_json(&h);
        assert!(json.starts_with("[\n  {\"client\": 1, \"key\": \"x\", \"op\": \"put\""));
        assert!(json.contains("\"output\": \"value\", \"output_value\": \"a\""));
    }

    #[test]
    fn unknown_writes_that_were_observed_are_searched() {
        // Twelve timed-out puts, every one seen by a later read, in an order the reads fix.
        let mut ops = Vec::new();
        for i in 0..12 {
            ops.push((i, put(&format!("v{i}")), None, i, None));
        }
        for (n, i) in [3, 1, 4, 0, 5, 9, 2, 6, 11, 8, 7, 10]
            .into_iter()
            .enumerate()
        {
            let at = 100 + 2 * n as u64;
            ops.push((
                99,
                KvInput::Get,
                read(Some(&format!("v{i}"))),
                at,
                Some(at + 1),
            ));
        }
        assert!(linearizable(&ops));
        // One more read of an earlier value: each put happens at most once.
        ops.push((99, KvInput::Get, read(Some("v3")), 200, Some(201)));
        assert!(!linearizable(&ops));
    }

    /// Linearizable by brute force: some permutation respecting real time is a legal run.
    fn brute_force(h: &[KvOperation]) -> bool {
        fn go(h: &[KvOperation], used: &mut Vec<bool>, state: Option<String>) -> bool {
            if used.iter().all(|u| *u) {
                return true;
            }
            for i in 0..h.len() {
                if used[i] {
                    continue;
                }
                // i may go next only if no unused operation completed before i was invoked.
                let blocked = (0..h.len())
                    .any(|j| j != i && !used[j] && h[j].ret.is_some_and(|r| r < h[i].call));
                if blocked {
                    continue;
                }
                if let Some(next) =
                    Register.step(&state, &(h[i].input.clone(), h[i].output.clone()))
                {
                    used[i] = true;
                    if go(h, used, next) {
                        return true;
                    }
                    used[i] = false;
                }
            }
            false
        }
        go(h, &mut vec![false; h.len()], None)
    }

    #[test]
    fn agrees_with_brute_force_on_random_small_histories() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(7);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..3000 {
            let n = rng.gen_range(1..=7);
            let mut times: Vec<u64> = (0..2 * n as u64).collect();
            // Random intervals: shuffle the event times, pair them up.
            for i in (1..times.len()).rev() {
                times.swap(i, rng.gen_range(0..=i));
            }
            let value = |rng: &mut SmallRng| -> Option<String> {
                let v = rng.gen_range(0..=n);
                (v > 0).then(|| format!("v{v}"))
            };
            let mut puts = 0;
            let ops: Vec<KvOperation> = (0..n)
                .map(|i| {
                    let (a, b) = (times[2 * i], times[2 * i + 1]);
                    let (call, ret) = (a.min(b), a.max(b));
                    let unknown = rng.gen_bool(0.2);
                    let (input, output) = match rng.gen_range(0..4) {
                        0 | 1 => {
                            puts += 1;
                            (put(&format!("v{puts}")), Some(KvOutput::Written))
                        }
                        2 => (KvInput::Get, Some(KvOutput::Value(value(&mut rng)))),
                        _ => {
                            let expected = value(&mut rng);
                            puts += 1;
                            let output = if rng.gen_bool(0.5) {
                                KvOutput::Swapped
                            } else {
                                KvOutput::Mismatch {
                                    current: value(&mut rng),
                                }
                            };
                            (
                                KvInput::Cas {
                                    expected,
                                    value: format!("v{puts}"),
                                },
                                Some(output),
                            )
                        }
                    };
                    let (output, ret) = if unknown {
                        (None, None)
                    } else {
                        (output, Some(ret))
                    };
                    KvOperation::new(i as u64, "x", input, output, call, ret)
                })
                .collect();
            let expected = brute_force(&ops);
            let check = check_kv(&ops);
            assert_eq!(check.is_linearizable(), expected, "{ops:#?}");
            assert_eq!(check.has_violation(), !expected, "{ops:#?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        assert!(
            yes > 300 && no > 300,
            "both verdicts are exercised: {yes} / {no}"
        );
    }

    #[test]
    fn the_budget_ends_the_search() {
        let h = history(&[
            (1, put("a"), OK, 0, Some(10)),
            (2, put("b"), OK, 1, Some(11)),
            (3, KvInput::Get, read(Some("c")), 12, Some(13)),
        ]);
        let check = check_kv_with_budget(&h, 3);
        assert_eq!(check.inconclusive(), vec!["x"]);
        assert!(!check.is_linearizable() && !check.has_violation());
        assert!(check_kv(&h).has_violation());
    }
}

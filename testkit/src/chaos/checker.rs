//! The invariants, checked over a recorded [`History`] and what the store holds afterwards
//! ([`Evidence`]). Pure: no I/O, so each rule can be tested on a hand-made history.
//!
//! | invariant | what must hold |
//! | --- | --- |
//! | `contiguous_log` | each game's log seqs are 1..N, no hole, no repeat |
//! | `unique_in_log` | no action id and no action text appears twice in a log |
//! | `answered_in_log` | every action answered 200 is in the log at the answer's `seq` with its `action_id` |
//! | `replay_equals_first` | every full answer to one key (replays, joined tries) is the same answer (`dispatched` aside); an outcome-unknown answer names the same `action_id` |
//! | `jobs_exist` | every job an answer's `dispatched` names is in the job storage |
//! | `stream_complete` | each event-stream session sees every committed event after its `Last-Event-ID` (or its first event) once, in order, or a `reset`; a catch-up session reaches the last one |
//! | `not_applied_absent` | an action all of whose tries were refused (503, 429, 4xx, connection refused) or only replayed is not in the log |
//! | `no_server_error` | no 5xx other than 503 |
//! | `precomputed_once` | a seeded precomputed row is served to one action at most (its replays aside), and a row served in an applied answer is consumed in the store |

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::driver::Evidence;
use super::recorder::{Call, History, Outcome, Verdict};

pub const INVARIANTS: [&str; 9] = [
    "contiguous_log",
    "unique_in_log",
    "answered_in_log",
    "replay_equals_first",
    "jobs_exist",
    "stream_complete",
    "not_applied_absent",
    "no_server_error",
    "precomputed_once",
];

/// One violation.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    pub invariant: &'static str,
    /// Index into the history's games.
    pub game: usize,
    pub detail: String,
    /// The logical actions involved (their tries make the replay).
    pub actions: Vec<u64>,
    /// The log seqs involved.
    pub seqs: Vec<u64>,
    /// The event-stream session involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
}

impl Anomaly {
    fn new(invariant: &'static str, game: usize, detail: String) -> Anomaly {
        Anomaly {
            invariant,
            game,
            detail,
            actions: Vec::new(),
            seqs: Vec::new(),
            session: None,
        }
    }
}

/// Every violation in the history, game by game.
pub fn check(history: &History, evidence: &Evidence) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (g, log) in evidence.logs.iter().enumerate() {
        check_precomputed(history, evidence, g, &mut out);
        let calls: Vec<&Call> = history.calls.iter().filter(|c| c.game == g).collect();
        let by_text: BTreeMap<&str, u64> =
            calls.iter().map(|c| (c.text.as_str(), c.action)).collect();
        let mut at_seq = BTreeMap::new();
        let mut seqs_of_text: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        let mut seqs_of_id: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for e in &log.entries {
            at_seq.insert(e.seq, e);
            if let Some(t) = &e.text {
                seqs_of_text.entry(t).or_default().push(e.seq);
            }
            if let Some(a) = &e.action_id {
                seqs_of_id.entry(a).or_default().push(e.seq);
            }
        }

        // 1. contiguous
        let seqs: Vec<u64> = log.entries.iter().map(|e| e.seq).collect();
        let present: BTreeSet<u64> = seqs.iter().copied().collect();
        let top = seqs.iter().copied().max().unwrap_or(0);
        let holes: Vec<u64> = (1..=top).filter(|s| !present.contains(s)).collect();
        let repeated = seqs.len() - present.len();
        if !holes.is_empty() || repeated > 0 {
            let mut a = Anomaly::new(
                "contiguous_log",
                g,
                format!(
                    "the log has {} entries up to seq {top}: holes at {holes:?}, {repeated} seqs repeated",
                    seqs.len()
                ),
            );
            a.seqs = holes;
            out.push(a);
        }

        // 2. unique
        for (text, seqs) in &seqs_of_text {
            if seqs.len() > 1 {
                let mut a = Anomaly::new(
                    "unique_in_log",
                    g,
                    format!(
                        "action text {text:?} is in the log {} times, at seqs {seqs:?}",
                        seqs.len()
                    ),
                );
                a.actions.extend(by_text.get(text));
                a.seqs = seqs.clone();
                out.push(a);
            }
        }
        for (id, seqs) in &seqs_of_id {
            if seqs.len() > 1 {
                let mut a = Anomaly::new(
                    "unique_in_log",
                    g,
                    format!(
                        "action id {id} is in the log {} times, at seqs {seqs:?}",
                        seqs.len()
                    ),
                );
                a.seqs = seqs.clone();
                out.push(a);
            }
        }

        // 3. every full answer is in the log, once, where it says
        for c in &calls {
            if !matches!(c.verdict(), Verdict::Applied | Verdict::Replayed) {
                continue;
            }
            let body = c.answer_body().expect("an answer");
            let (seq, id) = (
                body["seq"].as_u64().unwrap_or(0),
                body["action_id"].as_str().unwrap_or(""),
            );
            let problem = match at_seq.get(&seq) {
                None => Some(format!("the log has no seq {seq}")),
                Some(e)
                    if e.action_id.as_deref() != Some(id) || e.text.as_deref() != Some(&c.text) =>
                {
                    Some(format!(
                        "seq {seq} holds {} {:?} ({:?})",
                        e.kind,
                        e.text.as_deref().unwrap_or(""),
                        e.action_id.as_deref().unwrap_or("")
                    ))
                }
                Some(_) => None,
            };
            if let Some(p) = problem {
                let mut a = Anomaly::new(
                    "answered_in_log",
                    g,
                    format!(
                        "try #{} of {:?} was answered {} with action_id {id} at seq {seq}, but {p}",
                        c.id,
                        c.text,
                        c.status().unwrap_or(0)
                    ),
                );
                a.actions.push(c.action);
                a.seqs.push(seq);
                a.seqs
                    .extend(seqs_of_text.get(c.text.as_str()).into_iter().flatten());
                out.push(a);
            }
        }

        // Tries by logical action.
        let mut actions: BTreeMap<u64, Vec<&Call>> = BTreeMap::new();
        for c in &calls {
            actions.entry(c.action).or_default().push(c);
        }
        for (action, tries) in &actions {
            let text = tries[0].text.as_str();
            let logged = seqs_of_text.get(text).cloned().unwrap_or_default();

            // 4. one answer per key
            let full: Vec<&&Call> = tries
                .iter()
                .filter(|c| matches!(c.verdict(), Verdict::Applied | Verdict::Replayed))
                .collect();
            if let Some(first) = full.first() {
                let want = strip(first.answer_body().expect("an answer"));
                for other in &full[1..] {
                    let got = strip(other.answer_body().expect("an answer"));
                    if got != want {
                        let mut a = Anomaly::new(
                            "replay_equals_first",
                            g,
                            format!(
                                "tries #{} and #{} of {text:?} (same key) got different answers: action_id {} seq {} vs action_id {} seq {}",
                                first.id,
                                other.id,
                                want["action_id"],
                                want["seq"],
                                got["action_id"],
                                got["seq"]
                            ),
                        );
                        a.actions.push(*action);
                        out.push(a);
                        break;
                    }
                }
            }
            // An outcome-unknown answer names the action: if that id is in the log, it is this
            // action there (a try that did not land may leave its id unused: a retry with the
            // same key may then apply the action under another id).
            for c in tries.iter().filter(|c| c.verdict() == Verdict::Unknown) {
                let Some(said) = c.answer_body().and_then(|b| b["action_id"].as_str()) else {
                    continue;
                };
                for seq in seqs_of_id.get(said).into_iter().flatten() {
                    let e = at_seq[seq];
                    if e.text.as_deref() != Some(text) {
                        let mut a = Anomaly::new(
                            "replay_equals_first",
                            g,
                            format!(
                                "try #{} of {text:?} was answered {} (outcome unknown) with action_id {said}, but seq {seq} with that id is {:?}",
                                c.id,
                                c.status().unwrap_or(0),
                                e.text.as_deref().unwrap_or("")
                            ),
                        );
                        a.actions.push(*action);
                        a.seqs.push(*seq);
                        out.push(a);
                    }
                }
                if let Some(full) = full.first().and_then(|f| f.answer_body())
                    && full["action_id"].as_str() != Some(said)
                    && seqs_of_id.contains_key(said)
                {
                    let mut a = Anomaly::new(
                        "replay_equals_first",
                        g,
                        format!(
                            "try #{} of {text:?} was answered {} (outcome unknown) with action_id {said}, which is in the log, but another try got the full answer {}",
                            c.id,
                            c.status().unwrap_or(0),
                            full["action_id"]
                        ),
                    );
                    a.actions.push(*action);
                    out.push(a);
                }
            }

            // 7. refused means not applied
            let could_apply = tries
                .iter()
                .any(|c| matches!(c.verdict(), Verdict::Applied | Verdict::Unknown));
            if !logged.is_empty() && !could_apply {
                let said: Vec<String> = tries
                    .iter()
                    .map(|c| match (c.verdict(), &c.outcome) {
                        (Verdict::Replayed, _) => format!("#{}: 200 replayed", c.id),
                        (_, Outcome::Answer { status, .. }) => format!("#{}: {status}", c.id),
                        (_, Outcome::Error { connect: true, .. }) => {
                            format!("#{}: connection refused", c.id)
                        }
                        (_, Outcome::Error { .. }) => format!("#{}: error", c.id),
                        (_, Outcome::Timeout) => format!("#{}: timeout", c.id),
                    })
                    .collect();
                let mut a = Anomaly::new(
                    "not_applied_absent",
                    g,
                    format!(
                        "{text:?} is in the log at seq {logged:?}, but no try could have applied it ({})",
                        said.join(", ")
                    ),
                );
                a.actions.push(*action);
                a.seqs = logged.clone();
                out.push(a);
            }

            // 0. never a 500
            for c in tries.iter().filter(|c| c.verdict() == Verdict::ServerError) {
                let mut a = Anomaly::new(
                    "no_server_error",
                    g,
                    format!(
                        "try #{} of {text:?} was answered {}: {}",
                        c.id,
                        c.status().unwrap_or(0),
                        c.answer_body().cloned().unwrap_or_default()
                    ),
                );
                a.actions.push(*action);
                out.push(a);
            }
        }

        // 5. jobs
        for c in &calls {
            if c.verdict() != Verdict::Applied {
                continue;
            }
            let Some(dispatched) = c.answer_body().and_then(|b| b["dispatched"].as_array()) else {
                continue;
            };
            for job in dispatched.iter().filter_map(|j| j["job_id"].as_str()) {
                let problem = match evidence.jobs.get(job) {
                    Some(true) => continue,
                    Some(false) => "is not in the job storage (404)",
                    None => "could not be looked up",
                };
                let mut a = Anomaly::new(
                    "jobs_exist",
                    g,
                    format!("job {job} named by try #{} of {:?} {problem}", c.id, c.text),
                );
                a.actions.push(c.action);
                out.push(a);
            }
        }

        // 6. event streams
        let committed: Vec<(u64, u64)> = log.outbox.iter().map(|(id, _)| *id).collect();
        let committed_set: BTreeSet<(u64, u64)> = committed.iter().copied().collect();
        for s in history.sessions.iter().filter(|s| s.game == g) {
            if s.events.iter().any(|e| e.kind == "reset") {
                continue;
            }
            let got: Vec<(u64, u64)> = s
                .events
                .iter()
                .filter_map(|e| e.id.as_deref().and_then(parse_id))
                .filter(|id| committed_set.contains(id))
                .collect();
            let after = s.last_event_id.as_deref().and_then(parse_id);
            let problem = stream_problem(&committed, after, &got, s.catch_up);
            if let Some(p) = problem {
                let mut a = Anomaly::new(
                    "stream_complete",
                    g,
                    format!(
                        "session #{} (client {}, engine {}, Last-Event-ID {}, {}): {p}",
                        s.id,
                        s.client,
                        s.engine,
                        s.last_event_id.as_deref().unwrap_or("none"),
                        if s.catch_up {
                            "catch-up".to_owned()
                        } else {
                            format!("ended by {}", s.end)
                        }
                    ),
                );
                a.session = Some(s.id);
                out.push(a);
            }
        }
    }
    out
}

/// `precomputed_once`: the seeded rows' lines in the answers of game `g`.
fn check_precomputed(history: &History, evidence: &Evidence, g: usize, out: &mut Vec<Anomaly>) {
    let Some(seeded) = evidence.seeded.get(g) else {
        return;
    };
    // Line → the actions (by the answer's `action_id`) whose answers served it.
    let mut served: BTreeMap<&str, BTreeMap<&str, Vec<u64>>> = BTreeMap::new();
    for c in history.calls.iter().filter(|c| c.game == g) {
        if !matches!(c.verdict(), Verdict::Applied | Verdict::Replayed) {
            continue;
        }
        let Some(body) = c.answer_body() else {
            continue;
        };
        let id = body["action_id"].as_str().unwrap_or("");
        for r in body["reactions"].as_array().into_iter().flatten() {
            let Some(line) = r["text"].as_str() else {
                continue;
            };
            if r["source"] == "precomputed" && seeded.contains_key(line) {
                served
                    .entry(line)
                    .or_default()
                    .entry(id)
                    .or_default()
                    .push(c.action);
            }
        }
    }
    for (line, by_action) in &served {
        if by_action.len() > 1 {
            let mut a = Anomaly::new(
                "precomputed_once",
                g,
                format!(
                    "row {line:?} was served to {} actions: {:?}",
                    by_action.len(),
                    by_action.keys().collect::<Vec<_>>()
                ),
            );
            a.actions = by_action.values().flatten().copied().collect();
            out.push(a);
        }
        if seeded.get(*line) == Some(&false) {
            let mut a = Anomaly::new(
                "precomputed_once",
                g,
                format!("row {line:?} was served but is not consumed in the store"),
            );
            a.actions = by_action.values().flatten().copied().collect();
            out.push(a);
        }
    }
}

/// An answer without what may differ between a first answer and its replay.
fn strip(body: &Value) -> Value {
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        o.remove("dispatched");
    }
    b
}

/// `<seq>-<n>`
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (a, b) = id.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What is wrong with a session that got the committed ids `got` after `after`.
fn stream_problem(
    committed: &[(u64, u64)],
    after: Option<(u64, u64)>,
    got: &[(u64, u64)],
    catch_up: bool,
) -> Option<String> {
    if let Some(w) = got.windows(2).find(|w| w[0] >= w[1]) {
        return Some(if w[0] == w[1] {
            format!("event {}-{} came twice", w[0].0, w[0].1)
        } else {
            format!(
                "event {}-{} came after {}-{}",
                w[1].0, w[1].1, w[0].0, w[0].1
            )
        });
    }
    if let (Some(a), Some(first)) = (after, got.first())
        && *first <= a
    {
        return Some(format!(
            "event {}-{} is not after the Last-Event-ID",
            first.0, first.1
        ));
    }
    // From where it had to start (after its Last-Event-ID, or at its first event for a live
    // session) to the last one it got (to the end for a catch-up): nothing skipped.
    let (from, inclusive) = match (after, got.first()) {
        (Some(a), _) => (a, false),
        (None, Some(&first)) => (first, true),
        (None, None) => return None,
    };
    let to = if catch_up {
        committed.last().copied().unwrap_or((0, 0))
    } else {
        got.last().copied().unwrap_or(from)
    };
    let want: Vec<(u64, u64)> = committed
        .iter()
        .copied()
        .filter(|id| (*id > from || (inclusive && *id == from)) && *id <= to)
        .collect();
    let got_set: BTreeSet<(u64, u64)> = got.iter().copied().collect();
    let missed: Vec<String> = want
        .iter()
        .filter(|id| !got_set.contains(id))
        .map(|(a, b)| format!("{a}-{b}"))
        .collect();
    if missed.is_empty() {
        return None;
    }
    let shown: Vec<&String> = missed.iter().take(8).collect();
    Some(format!(
        "missed {} committed event(s) up to {}-{}: {shown:?}{}",
        missed.len(),
        to.0,
        to.1,
        if missed.len() > 8 { " …" } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::cluster::{GameLog, LogEntry};
    use crate::chaos::recorder::Session;
    use serde_json::json;

    fn entry(seq: u64, text: &str) -> LogEntry {
        LogEntry {
            seq,
            kind: "action_applied".into(),
            action_id: Some(format!("id-{text}")),
            text: Some(text.into()),
        }
    }

    fn call(id: u64, action: u64, text: &str, key: Option<&str>, outcome: Outcome) -> Call {
        Call {
            id,
            game: 0,
            player: 0,
            action,
            attempt: 1,
            retry_of: None,
            text: text.into(),
            body: json!({}),
            key: key.map(str::to_owned),
            engine: 0,
            timeout_ms: 1000,
            sent_ms: id * 10,
            done_ms: id * 10 + 5,
            outcome,
        }
    }

    fn answer(status: u16, replayed: bool, body: Value) -> Outcome {
        Outcome::Answer {
            status,
            replayed,
            location: None,
            body,
        }
    }

    fn ok(text: &str, seq: u64) -> Outcome {
        answer(
            200,
            false,
            json!({"action_id": format!("id-{text}"), "seq": seq, "dispatched": []}),
        )
    }

    fn invariants(h: &History, e: &Evidence) -> Vec<&'static str> {
        check(h, e).into_iter().map(|a| a.invariant).collect()
    }

    fn evidence(entries: Vec<LogEntry>) -> Evidence {
        Evidence {
            logs: vec![GameLog {
                entries,
                outbox: vec![],
            }],
            jobs: Default::default(),
            seeded: Vec::new(),
        }
    }

    /// A seeded row served to two actions, or served and still ready, is found; served to one
    /// action and replayed, it is not.
    #[test]
    fn a_row_served_twice_is_found() {
        let served = |text: &str, seq: u64, line: &str| {
            answer(
                200,
                false,
                json!({"action_id": format!("id-{text}"), "seq": seq, "dispatched": [],
                       "reactions": [{"text": line, "source": "precomputed"},
                                     {"text": "a fallback", "source": "fallback"}]}),
            )
        };
        let replay = answer(
            200,
            true,
            json!({"action_id": "id-a", "seq": 1, "dispatched": [],
                   "reactions": [{"text": "row 1", "source": "precomputed"},
                                 {"text": "a fallback", "source": "fallback"}]}),
        );
        let with_rows = |consumed: bool| {
            let mut e = evidence(vec![entry(1, "a"), entry(2, "b")]);
            e.seeded = vec![BTreeMap::from([
                ("row 1".to_owned(), consumed),
                ("row 2".to_owned(), true),
            ])];
            e
        };
        let once = History {
            calls: vec![
                call(1, 1, "a", Some("k"), served("a", 1, "row 1")),
                call(2, 1, "a", Some("k"), replay),
                call(3, 2, "b", None, served("b", 2, "row 2")),
            ],
            ..History::default()
        };
        assert!(invariants(&once, &with_rows(true)).is_empty());
        assert_eq!(
            invariants(&once, &with_rows(false)),
            vec!["precomputed_once"]
        );
        let twice = History {
            calls: vec![
                call(1, 1, "a", None, served("a", 1, "row 1")),
                call(2, 2, "b", None, served("b", 2, "row 1")),
            ],
            ..History::default()
        };
        assert_eq!(
            invariants(&twice, &with_rows(true)),
            vec!["precomputed_once"]
        );
    }

    #[test]
    fn a_clean_history_passes() {
        let h = History {
            calls: vec![
                call(1, 1, "a", Some("k"), ok("a", 1)),
                call(
                    2,
                    1,
                    "a",
                    Some("k"),
                    answer(
                        200,
                        true,
                        json!({"action_id": "id-a", "seq": 1, "dispatched": []}),
                    ),
                ),
            ],
            ..History::default()
        };
        assert_eq!(
            invariants(&h, &evidence(vec![entry(1, "a")])),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_hole_and_a_duplicate_are_found() {
        let h = History {
            calls: vec![
                call(1, 1, "a", Some("k"), ok("a", 1)),
                call(2, 1, "a", Some("k"), ok("a", 3)),
            ],
            ..History::default()
        };
        let found = invariants(&h, &evidence(vec![entry(1, "a"), entry(3, "a")]));
        assert!(found.contains(&"contiguous_log"), "{found:?}");
        assert!(found.contains(&"unique_in_log"), "{found:?}");
        assert!(found.contains(&"replay_equals_first"), "{found:?}");
    }

    #[test]
    fn a_503_for_an_applied_action_is_found() {
        let refused = answer(
            503,
            false,
            json!({"error": {"code": "unavailable", "message": "x"}}),
        );
        let h = History {
            calls: vec![call(1, 1, "a", None, refused.clone())],
            ..History::default()
        };
        assert_eq!(
            invariants(&h, &evidence(vec![entry(1, "a")])),
            vec!["not_applied_absent"]
        );
        // Refused, then a replay: the replay shows the refused try had applied it.
        let h = History {
            calls: vec![
                call(1, 1, "a", Some("k"), refused),
                call(
                    2,
                    1,
                    "a",
                    Some("k"),
                    answer(200, true, json!({"action_id": "id-a", "seq": 1})),
                ),
            ],
            ..History::default()
        };
        assert_eq!(
            invariants(&h, &evidence(vec![entry(1, "a")])),
            vec!["not_applied_absent"]
        );
        // A timeout may have applied it.
        let h = History {
            calls: vec![call(1, 1, "a", None, Outcome::Timeout)],
            ..History::default()
        };
        assert!(invariants(&h, &evidence(vec![entry(1, "a")])).is_empty());
    }

    #[test]
    fn an_outcome_unknown_answer_must_name_its_own_action() {
        let unknown = |id: &str| answer(202, false, json!({"action_id": id}));
        // The first try did not land; the retry applied the action under another id: fine.
        let h = History {
            calls: vec![
                call(1, 1, "a", Some("k"), unknown("id-lost")),
                call(2, 1, "a", Some("k"), ok("a", 1)),
            ],
            ..History::default()
        };
        assert!(invariants(&h, &evidence(vec![entry(1, "a")])).is_empty());
        // The 202 names another action of the log.
        let h = History {
            calls: vec![call(1, 1, "a", Some("k"), unknown("id-b"))],
            ..History::default()
        };
        assert_eq!(
            invariants(&h, &evidence(vec![entry(1, "a"), entry(2, "b")])),
            vec!["replay_equals_first"]
        );
    }

    #[test]
    fn a_skipped_or_repeated_stream_event_is_found() {
        let mut e = evidence(vec![entry(1, "a"), entry(2, "b")]);
        e.logs[0].outbox = vec![
            ((1, 0), "action.applied".into()),
            ((1, 1), "state.updated".into()),
            ((2, 0), "action.applied".into()),
        ];
        let session = |last: Option<&str>, ids: &[&str], catch_up: bool| Session {
            id: 9,
            game: 0,
            client: 0,
            engine: 0,
            last_event_id: last.map(str::to_owned),
            catch_up,
            opened_ms: 0,
            status: Some(200),
            events: ids
                .iter()
                .map(|id| crate::chaos::recorder::Seen {
                    at_ms: 1,
                    id: Some((*id).into()),
                    kind: "x".into(),
                    seq: None,
                    action_id: None,
                })
                .collect(),
            closed_ms: 2,
            end: "client".into(),
        };
        let h = |s| History {
            sessions: vec![s],
            ..History::default()
        };
        assert!(invariants(&h(session(Some("1-0"), &["1-1", "2-0"], true)), &e).is_empty());
        assert!(invariants(&h(session(None, &["1-1", "1-2"], false)), &e).is_empty());
        assert_eq!(
            invariants(&h(session(Some("0-0"), &["1-0", "2-0"], false)), &e),
            vec!["stream_complete"]
        );
        assert_eq!(
            invariants(&h(session(Some("1-0"), &["1-1", "1-1"], false)), &e),
            vec!["stream_complete"]
        );
        assert_eq!(
            invariants(&h(session(Some("1-0"), &["1-1"], true)), &e),
            vec!["stream_complete"]
        );
    }
}

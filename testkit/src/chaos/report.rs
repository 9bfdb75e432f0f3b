//! What a run says: counts over histories (actions, requests by outcome, faults by kind,
//! anomalies by invariant), and for each anomaly the seed and a minimal history to replay —
//! the requests, answers and faults touching the offending game around it, in time order, and
//! the log entries in question.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

use super::checker::Anomaly;
use super::driver::Evidence;
use super::recorder::{History, Outcome};

/// One checked history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryResult {
    pub history: History,
    pub evidence: Evidence,
    pub anomalies: Vec<Anomaly>,
}

/// Counts over one or more histories.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub histories: u64,
    /// Logical actions (a retry with the same key is the same action).
    pub actions: u64,
    /// HTTP tries of actions.
    pub requests: u64,
    /// Tries by outcome: the status (`200 replayed` apart), `timeout`, `refused` (no
    /// connection), `error` (the connection failed after it was made).
    pub outcomes: BTreeMap<String, u64>,
    /// Actions in the logs.
    pub logged_actions: u64,
    /// Seeded precomputed rows consumed by the history's actions (`precomputed_once` checks
    /// each was served once).
    pub seeded_rows_taken: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Faults drawn but not injected (the lock not granted, …), by kind.
    pub faults_not_injected: BTreeMap<String, u64>,
    pub stream_sessions: u64,
    pub stream_events: u64,
    pub stream_resets: u64,
    /// Anomalies by invariant.
    pub anomalies: BTreeMap<String, u64>,
    /// The seeds of the histories with anomalies, by deployment.
    pub failing_seeds: Vec<(String, u64)>,
    pub seconds: f64,
}

impl Summary {
    pub fn add(&mut self, r: &HistoryResult) {
        let h = &r.history;
        self.histories += 1;
        self.actions += h
            .calls
            .iter()
            .map(|c| c.action)
            .collect::<BTreeSet<_>>()
            .len() as u64;
        self.requests += h.calls.len() as u64;
        for c in &h.calls {
            let k = match &c.outcome {
                Outcome::Answer {
                    status,
                    replayed: true,
                    ..
                } => format!("{status} replayed"),
                Outcome::Answer { status, .. } => status.to_string(),
                Outcome::Timeout => "timeout".into(),
                Outcome::Error { connect: true, .. } => "refused".into(),
                Outcome::Error { .. } => "error".into(),
            };
            *self.outcomes.entry(k).or_default() += 1;
        }
        self.seeded_rows_taken += r
            .evidence
            .seeded
            .iter()
            .flat_map(|g| g.values())
            .filter(|taken| **taken)
            .count() as u64;
        self.logged_actions += r
            .evidence
            .logs
            .iter()
            .flat_map(|l| &l.entries)
            .filter(|e| e.kind == "action_applied")
            .count() as u64;
        for f in &h.faults {
            let map = if f.injected {
                &mut self.faults
            } else {
                &mut self.faults_not_injected
            };
            *map.entry(f.kind.clone()).or_default() += 1;
        }
        self.stream_sessions += h.sessions.len() as u64;
        for s in &h.sessions {
            self.stream_events += s.events.len() as u64;
            self.stream_resets += s.events.iter().filter(|e| e.kind == "reset").count() as u64;
        }
        for a in &r.anomalies {
            *self.anomalies.entry(a.invariant.to_owned()).or_default() += 1;
        }
        if !r.anomalies.is_empty() {
            self.failing_seeds.push((h.deployment.clone(), h.seed));
        }
        self.seconds += h.ran_ms as f64 / 1000.0;
    }

    pub fn anomaly_count(&self) -> u64 {
        self.anomalies.values().sum()
    }

    /// A few lines for a person.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} histories, {:.0} s: {} actions, {} requests, {} actions logged, {} seeded rows taken",
            self.histories,
            self.seconds,
            self.actions,
            self.requests,
            self.logged_actions,
            self.seeded_rows_taken
        );
        let _ = writeln!(s, "  outcomes: {}", pairs(&self.outcomes));
        let _ = writeln!(s, "  faults injected: {}", pairs(&self.faults));
        if !self.faults_not_injected.is_empty() {
            let _ = writeln!(
                s,
                "  faults not injected: {}",
                pairs(&self.faults_not_injected)
            );
        }
        let _ = writeln!(
            s,
            "  event streams: {} sessions, {} events, {} resets",
            self.stream_sessions, self.stream_events, self.stream_resets
        );
        let _ = writeln!(
            s,
            "  anomalies: {}{}",
            self.anomaly_count(),
            if self.anomalies.is_empty() {
                String::new()
            } else {
                format!(" ({})", pairs(&self.anomalies))
            }
        );
        if !self.failing_seeds.is_empty() {
            let seeds: Vec<String> = self
                .failing_seeds
                .iter()
                .map(|(d, s)| format!("{d} {s}"))
                .collect();
            let _ = writeln!(s, "  failing seeds: {}", seeds.join(", "));
        }
        s
    }
}

fn pairs(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The anomaly, its seed and the part of the history that shows it.
pub fn replay(r: &HistoryResult, a: &Anomaly) -> String {
    let h = &r.history;
    let g = a.game;
    let game_id = h.games.get(g).map(String::as_str).unwrap_or("?");
    let log = r.evidence.logs.get(g);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ANOMALY {} — seed {}, {} deployment, game {g} ({game_id})\n  {}",
        a.invariant, h.seed, h.deployment, a.detail
    );

    // The actions in question: named, or at the seqs in question (± 2), or answered there.
    let mut actions: BTreeSet<u64> = a.actions.iter().copied().collect();
    let named: BTreeSet<&str> = h
        .calls
        .iter()
        .filter(|c| actions.contains(&c.action))
        .map(|c| c.text.as_str())
        .collect();
    let mut at: BTreeSet<u64> = a.seqs.iter().copied().collect();
    if let Some(log) = log {
        at.extend(
            log.entries
                .iter()
                .filter(|e| e.text.as_deref().is_some_and(|t| named.contains(t)))
                .map(|e| e.seq),
        );
    }
    let near: BTreeSet<u64> = at
        .iter()
        .flat_map(|s| s.saturating_sub(2)..=s + 2)
        .collect();
    if let Some(log) = log {
        let texts: BTreeSet<&str> = log
            .entries
            .iter()
            .filter(|e| near.contains(&e.seq))
            .filter_map(|e| e.text.as_deref())
            .collect();
        for c in h.calls.iter().filter(|c| c.game == g) {
            let answered_near = c
                .answer_body()
                .and_then(|b| b["seq"].as_u64())
                .is_some_and(|s| near.contains(&s));
            if texts.contains(c.text.as_str()) || answered_near {
                actions.insert(c.action);
            }
        }
    }
    let session = a
        .session
        .and_then(|id| h.sessions.iter().find(|s| s.id == id));
    let window = if let Some(s) = session {
        Some((s.opened_ms.saturating_sub(2_000), s.closed_ms + 2_000))
    } else {
        let spans: Vec<(u64, u64)> = h
            .calls
            .iter()
            .filter(|c| actions.contains(&c.action))
            .map(|c| (c.sent_ms, c.done_ms))
            .collect();
        (!spans.is_empty()).then(|| {
            (
                spans
                    .iter()
                    .map(|s| s.0)
                    .min()
                    .unwrap_or(0)
                    .saturating_sub(1_000),
                spans.iter().map(|s| s.1).max().unwrap_or(0) + 1_000,
            )
        })
    };
    let (from, to) = window.unwrap_or((0, u64::MAX));
    let _ = writeln!(
        out,
        "  history of game {g} from {from} ms to {} (time in ms since the start; -> sent, <- answered):",
        if to == u64::MAX {
            "the end".to_owned()
        } else {
            format!("{to} ms")
        }
    );
    let mut lines: Vec<(u64, u64, String)> = Vec::new();
    for c in h.calls.iter().filter(|c| c.game == g) {
        if c.done_ms < from || c.sent_ms > to {
            continue;
        }
        let mark = if actions.contains(&c.action) {
            "*"
        } else {
            " "
        };
        let key = c.key.as_deref().unwrap_or("-");
        lines.push((
            c.sent_ms,
            c.id * 2,
            format!(
                "{mark}-> #{} action {} attempt {} {:?} key {key} engine {} timeout {} ms",
                c.id, c.action, c.attempt, c.text, c.engine, c.timeout_ms
            ),
        ));
        let d = c.describe();
        let answer = d.split_once(" -> ").map(|x| x.1).unwrap_or(&d);
        lines.push((
            c.done_ms,
            c.id * 2 + 1,
            format!("{mark}<- #{} {answer}", c.id),
        ));
    }
    for f in &h.faults {
        if f.end_ms < from || f.start_ms > to || f.game.is_some_and(|fg| fg != g) {
            continue;
        }
        lines.push((
            f.start_ms,
            0,
            format!(
                " !! fault {} until {} ms: {}{}",
                f.kind,
                f.end_ms,
                f.detail,
                if f.injected { "" } else { " (not injected)" }
            ),
        ));
    }
    if let Some(s) = session {
        lines.push((
            s.opened_ms,
            1,
            format!(
                "*~~ session #{} opened on engine {} with Last-Event-ID {}",
                s.id,
                s.engine,
                s.last_event_id.as_deref().unwrap_or("none")
            ),
        ));
        for e in &s.events {
            lines.push((
                e.at_ms,
                1,
                format!(
                    "*~~ session #{} got {} id {}",
                    s.id,
                    e.kind,
                    e.id.as_deref().unwrap_or("-")
                ),
            ));
        }
        lines.push((
            s.closed_ms,
            1,
            format!("*~~ session #{} ended: {}", s.id, s.end),
        ));
    }
    lines.sort_by_key(|l| (l.0, l.1));
    const MAX: usize = 400;
    if lines.len() > MAX {
        let _ = writeln!(out, "  … {} earlier lines left out", lines.len() - MAX);
    }
    for (t, _, l) in lines.iter().skip(lines.len().saturating_sub(MAX)) {
        let _ = writeln!(out, "  {t:>7} {l}");
    }
    if let Some(log) = log {
        let shown: Vec<_> = if near.is_empty() {
            log.entries
                .iter()
                .skip(log.entries.len().saturating_sub(5))
                .collect()
        } else {
            log.entries
                .iter()
                .filter(|e| near.contains(&e.seq))
                .collect()
        };
        let _ = writeln!(out, "  the log (of {} entries) there:", log.entries.len());
        for e in shown {
            let _ = writeln!(
                out,
                "    seq {:>4} {} {} {}",
                e.seq,
                e.kind,
                e.action_id.as_deref().unwrap_or(""),
                e.text
                    .as_deref()
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

/// Every anomaly of a history with its replay, the same invariant printed at most `per_kind`
/// times (the rest counted).
pub fn replays(r: &HistoryResult, per_kind: usize) -> String {
    let mut out = String::new();
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    let mut hidden: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &r.anomalies {
        let n = shown.entry(a.invariant).or_default();
        *n += 1;
        if *n > per_kind {
            *hidden.entry(a.invariant).or_default() += 1;
            continue;
        }
        out.push_str(&replay(r, a));
        out.push('\n');
    }
    for (invariant, n) in hidden {
        let _ = writeln!(out, "({n} more {invariant} anomalies not shown)");
        for a in r
            .anomalies
            .iter()
            .filter(|a| a.invariant == invariant)
            .take(10)
        {
            let _ = writeln!(out, "  game {}: {}", a.game, a.detail);
        }
    }
    out
}

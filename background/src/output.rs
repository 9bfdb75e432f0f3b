//! Model output → typed values of `hotpath-cache`, validated before anything is written:
//! the JSON object is found and parsed, required fields are present, lengths are bounded, and
//! every stakeholder or canon event it names exists. A rejection says what was wrong in a
//! sentence the retry's prompt can show the model.

use std::collections::{BTreeMap, BTreeSet};

use hotpath_cache::StakeholderId;
use hotpath_cache::model::{ActionKind, Gossip, StakeholderMove};
use hotpath_cache::scenario::Scenario;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why an answer was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid<T>(msg: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(msg.into()))
}

/// The JSON object in `text`: models wrap it in code fences or a sentence despite being asked
/// not to, so take the outermost `{ … }`.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Invalid> {
    let Some(start) = text.find('{') else {
        return invalid("the answer contains no JSON object");
    };
    let Some(end) = text.rfind('}').filter(|end| *end > start) else {
        return invalid("the answer contains no complete JSON object (it is cut off)");
    };
    serde_json::from_str(&text[start..=end]).map_err(|e| {
        Invalid(format!(
            "the JSON object does not have the asked shape: {e}"
        ))
    })
}

fn text_field(name: &str, value: &str, min: usize, max: usize) -> Result<String, Invalid> {
    let v = value.trim();
    let n = v.chars().count();
    if n < min {
        return invalid(format!(
            "field `{name}` must have at least {min} characters, found {n}"
        ));
    }
    if n > max {
        return invalid(format!(
            "field `{name}` must have at most {max} characters, found {n}"
        ));
    }
    Ok(v.to_owned())
}

fn known_stakeholder(scenario: &Scenario, field: &str, id: &str) -> Result<StakeholderId, Invalid> {
    StakeholderId::new(id)
        .ok()
        .filter(|id| scenario.stakeholder(id).is_some())
        .ok_or_else(|| {
            let known: Vec<&str> = scenario
                .stakeholders
                .iter()
                .map(|s| s.id.as_str())
                .collect();
            Invalid(format!(
                "field `{field}` names unknown stakeholder `{id}`; use one of: {}",
                known.join(", ")
            ))
        })
}

#[derive(Deserialize)]
struct RawMove {
    behaviour: String,
    intent: String,
    line: String,
}

/// A stakeholder action or reaction.
pub fn stakeholder_move(text: &str) -> Result<StakeholderMove, Invalid> {
    checked_move(parse(text)?)
}

#[derive(Deserialize)]
struct RawReaction {
    stakeholder_id: String,
    action_kind: String,
    #[serde(flatten)]
    reaction: RawMove,
}

#[derive(Deserialize)]
struct RawReactions {
    reactions: Vec<RawReaction>,
}

fn checked_move(raw: RawMove) -> Result<StakeholderMove, Invalid> {
    let intent = text_field("intent", &raw.intent, 2, 24)?.to_lowercase();
    if !intent.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return invalid(format!(
            "field `intent` must be one lower-case word, found `{intent}`"
        ));
    }
    Ok(StakeholderMove {
        behaviour: text_field("behaviour", &raw.behaviour, 3, 160)?,
        intent,
        line: text_field("line", &raw.line, 1, 400)?,
    })
}

/// A scene's reactions: each names a stakeholder of `present` and an action kind of
/// `wanted`. Entries for pairs not asked for are refused; a pair asked for but missing is
/// refused too, so the retry asks again.
pub fn scene_reactions(
    text: &str,
    wanted: &BTreeMap<(StakeholderId, ActionKind), u32>,
) -> Result<Vec<(StakeholderId, ActionKind, StakeholderMove)>, Invalid> {
    let raw: RawReactions = parse(text)?;
    let mut out = Vec::new();
    for r in raw.reactions {
        let kind = ActionKind::parse(&r.action_kind).ok_or_else(|| {
            Invalid(format!(
                "`action_kind` `{}` is not a kind of action",
                r.action_kind
            ))
        })?;
        let who = StakeholderId::new(r.stakeholder_id.clone())
            .ok()
            .filter(|id| wanted.contains_key(&(id.clone(), kind)))
            .ok_or_else(|| {
                Invalid(format!(
                    "a reaction of `{}` to `{}` was not asked for",
                    r.stakeholder_id, r.action_kind
                ))
            })?;
        out.push((who, kind, checked_move(r.reaction)?));
    }
    for (who, kind) in wanted.keys() {
        if !out.iter().any(|(w, k, _)| w == who && k == kind) {
            return invalid(format!(
                "no reaction of `{who}` to `{}` was given",
                kind.as_str()
            ));
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct RawBeats {
    beats: Vec<String>,
}

/// The descriptions of a phase's `count` beats, in order.
pub fn beats(text: &str, count: usize) -> Result<Vec<String>, Invalid> {
    let raw: RawBeats = parse(text)?;
    if raw.beats.len() < count {
        return invalid(format!(
            "`beats` must have {count} strings, found {}",
            raw.beats.len()
        ));
    }
    raw.beats
        .iter()
        .take(count)
        .map(|b| text_field("beats[]", b, 10, 1200))
        .collect()
}

#[derive(Deserialize)]
struct RawText {
    text: String,
}

/// Narration or a beat description.
pub fn prose(text: &str) -> Result<String, Invalid> {
    let raw: RawText = parse(text)?;
    text_field("text", &raw.text, 10, 1200)
}

#[derive(Deserialize)]
struct RawGossip {
    from: String,
    about: String,
    line: String,
}

#[derive(Deserialize)]
struct RawSocial {
    gossip: Vec<RawGossip>,
    reputation: BTreeMap<String, i64>,
}

pub fn social(
    text: &str,
    scenario: &Scenario,
) -> Result<(Vec<Gossip>, BTreeMap<StakeholderId, i32>), Invalid> {
    let raw: RawSocial = parse(text)?;
    if raw.gossip.len() > 12 {
        return invalid(format!(
            "field `gossip` may hold at most 12 lines, found {}",
            raw.gossip.len()
        ));
    }
    let mut gossip = Vec::with_capacity(raw.gossip.len());
    for (i, g) in raw.gossip.iter().enumerate() {
        let from = known_stakeholder(scenario, &format!("gossip[{i}].from"), &g.from)?;
        let about = known_stakeholder(scenario, &format!("gossip[{i}].about"), &g.about)?;
        if from == about {
            return invalid(format!(
                "gossip[{i}] is about its own speaker `{from}`; pick another stakeholder"
            ));
        }
        gossip.push(Gossip {
            from,
            about,
            line: text_field(&format!("gossip[{i}].line"), &g.line, 1, 300)?,
        });
    }
    let mut reputation = BTreeMap::new();
    for (id, value) in &raw.reputation {
        let who = known_stakeholder(scenario, &format!("reputation.{id}"), id)?;
        if !(-100..=100).contains(value) {
            return invalid(format!(
                "field `reputation.{id}` must be from -100 to 100, found {value}"
            ));
        }
        reputation.insert(who, *value as i32);
    }
    Ok((gossip, reputation))
}

#[derive(Deserialize)]
pub struct Canon {
    pub title: String,
    pub summary: String,
}

pub fn canon(text: &str) -> Result<Canon, Invalid> {
    let raw: Canon = parse(text)?;
    Ok(Canon {
        title: text_field("title", &raw.title, 3, 120)?,
        summary: text_field("summary", &raw.summary, 10, 1500)?,
    })
}

#[derive(Deserialize)]
struct RawRef {
    canon_id: String,
    stakeholder_id: String,
    line: String,
}

#[derive(Deserialize)]
struct RawRefs {
    items: Vec<RawRef>,
}

pub fn canon_references(
    text: &str,
    scenario: &Scenario,
    canon_ids: &BTreeSet<uuid::Uuid>,
) -> Result<Vec<hotpath_cache::model::CanonReference>, Invalid> {
    let raw: RawRefs = parse(text)?;
    if raw.items.len() > 50 {
        return invalid(format!(
            "field `items` may hold at most 50 lines, found {}",
            raw.items.len()
        ));
    }
    raw.items
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let canon_id = uuid::Uuid::parse_str(r.canon_id.trim())
                .ok()
                .filter(|id| canon_ids.contains(id))
                .ok_or_else(|| {
                    Invalid(format!(
                        "items[{i}].canon_id `{}` is not one of the listed canon ids",
                        r.canon_id
                    ))
                })?;
            Ok(hotpath_cache::model::CanonReference {
                canon_id,
                stakeholder_id: known_stakeholder(
                    scenario,
                    &format!("items[{i}].stakeholder_id"),
                    &r.stakeholder_id,
                )?,
                line: text_field(&format!("items[{i}].line"), &r.line, 1, 300)?,
            })
        })
        .collect()
}

/// A streamed dialogue reply (plain text).
pub fn dialogue(text: &str) -> Result<String, Invalid> {
    text_field("reply", text, 1, 2000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpath_cache::scenario::builtin;

    fn scenario() -> Scenario {
        builtin()["harbor-strike"].clone()
    }

    #[test]
    fn moves_parse_through_fences_and_reject_what_is_missing() {
        let ok = stakeholder_move(
            "```json\n{\"behaviour\":\"Mara steps in\",\"intent\":\"Warn\",\"line\":\"Back off.\"}\n```",
        )
        .unwrap();
        assert_eq!(ok.intent, "warn");
        for (text, needle) in [
            ("I'm sorry", "no JSON object"),
            ("{\"behaviour\": \"x", "no complete JSON object"),
            (
                "{\"behaviour\":\"Mara steps\",\"intent\":\"warn\"}",
                "missing field `line`",
            ),
            (
                "{\"behaviour\":\"Mara steps\",\"intent\":\"warn\",\"line\":\"\"}",
                "`line` must have at least 1",
            ),
            (
                "{\"behaviour\":\"Mara steps\",\"intent\":\"two words\",\"line\":\"x\"}",
                "one lower-case word",
            ),
        ] {
            let err = stakeholder_move(text).unwrap_err().0;
            assert!(err.contains(needle), "{text}: {err}");
        }
        let long = format!(
            "{{\"behaviour\":\"Mara steps\",\"intent\":\"warn\",\"line\":\"{}\"}}",
            "a".repeat(401)
        );
        assert!(
            stakeholder_move(&long)
                .unwrap_err()
                .0
                .contains("at most 400")
        );
    }

    #[test]
    fn social_checks_who_is_named() {
        let s = scenario();
        let ids: Vec<&str> = s.stakeholders.iter().map(|x| x.id.as_str()).collect();
        let good = format!(
            "{{\"gossip\":[{{\"from\":\"{}\",\"about\":\"{}\",\"line\":\"hm\"}}],\"reputation\":{{\"{}\":20}}}}",
            ids[0], ids[1], ids[0]
        );
        let (g, r) = social(&good, &s).unwrap();
        assert_eq!((g.len(), r.len()), (1, 1));
        let ghost = good.replacen(ids[1], "nobody", 1);
        assert!(
            social(&ghost, &s)
                .unwrap_err()
                .0
                .contains("unknown stakeholder `nobody`")
        );
        let out_of_range = good.replace(":20}", ":500}");
        assert!(
            social(&out_of_range, &s)
                .unwrap_err()
                .0
                .contains("-100 to 100")
        );
    }

    #[test]
    fn canon_references_must_name_listed_canon() {
        let s = scenario();
        let id = uuid::Uuid::now_v7();
        let known: BTreeSet<_> = [id].into();
        let who = s.stakeholders[0].id.as_str();
        let text = format!(
            "{{\"items\":[{{\"canon_id\":\"{id}\",\"stakeholder_id\":\"{who}\",\"line\":\"Remember.\"}}]}}"
        );
        assert_eq!(canon_references(&text, &s, &known).unwrap().len(), 1);
        let other = uuid::Uuid::now_v7();
        let text = text.replace(&id.to_string(), &other.to_string());
        assert!(
            canon_references(&text, &s, &known)
                .unwrap_err()
                .0
                .contains("not one of the listed")
        );
    }
}

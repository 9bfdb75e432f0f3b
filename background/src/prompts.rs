//! Prompt templates (minijinja), embedded from `background/prompts/` so the binary carries
//! them. A prompt's version is a digest of its template text (and of the shared pieces it
//! includes), so every artifact's provenance names exactly the prompt that produced it, and
//! editing a template changes the version without anyone remembering to bump it.

use std::sync::OnceLock;

use hotpath_cache::jobs::JobKind;
use minijinja::Environment;
use minijinja::value::Serde;
use serde_json::Value;
use sha2::{Digest, Sha256};

const TEMPLATES: &[(&str, &str)] = &[
    ("system.j2", include_str!("../prompts/system.j2")),
    ("_feedback.j2", include_str!("../prompts/_feedback.j2")),
    (
        "_stakeholder.j2",
        include_str!("../prompts/_stakeholder.j2"),
    ),
    (
        "scene_reactions.j2",
        include_str!("../prompts/scene_reactions.j2"),
    ),
    (
        "phase_narration.j2",
        include_str!("../prompts/phase_narration.j2"),
    ),
    (
        "beat_description.j2",
        include_str!("../prompts/beat_description.j2"),
    ),
    (
        "social_bundle.j2",
        include_str!("../prompts/social_bundle.j2"),
    ),
    (
        "canonize_conflict.j2",
        include_str!("../prompts/canonize_conflict.j2"),
    ),
    (
        "canon_references.j2",
        include_str!("../prompts/canon_references.j2"),
    ),
    (
        "dialogue_reply.j2",
        include_str!("../prompts/dialogue_reply.j2"),
    ),
];

/// The template of a job kind (`None` for kinds that call no model).
pub fn template_of(kind: JobKind) -> Option<&'static str> {
    Some(match kind {
        JobKind::PrepareSceneReactions => "scene_reactions.j2",
        JobKind::NarratePhaseTransition => "phase_narration.j2",
        JobKind::GenerateBeatDescription => "beat_description.j2",
        JobKind::GenerateSocialBundle => "social_bundle.j2",
        JobKind::CanonizeConflict => "canonize_conflict.j2",
        JobKind::GenerateCanonReferences => "canon_references.j2",
        JobKind::StreamDialogueReply => "dialogue_reply.j2",
        JobKind::CleanupExpiredActions => return None,
    })
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .expect("embedded templates parse (tested)");
        }
        env
    })
}

/// `<kind>@<first 12 hex of sha256(template + shared pieces)>`.
pub fn version(kind: JobKind) -> String {
    let mut h = Sha256::new();
    if let Some(name) = template_of(kind) {
        for (n, text) in TEMPLATES {
            if *n == name || n.starts_with('_') || *n == "system.j2" {
                h.update(n.as_bytes());
                h.update(text.as_bytes());
            }
        }
    }
    let digest = crate::llm::hex(&h.finalize());
    format!("{}@{}", kind.as_str(), &digest[..12])
}

/// A rendered prompt: the system part and the user part.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub system: String,
    pub user: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
#[error("prompt template {template}: {message}")]
pub struct PromptError {
    pub template: String,
    pub message: String,
}

/// Renders the prompt of `kind` from `facts` (a JSON object), adding `feedback` — why the last
/// answer was rejected — when retrying.
pub fn render(
    kind: JobKind,
    facts: &Value,
    json: bool,
    feedback: Option<&str>,
) -> Result<Prompt, PromptError> {
    let name = template_of(kind).ok_or_else(|| PromptError {
        template: kind.as_str().into(),
        message: "this job kind has no prompt".into(),
    })?;
    let mut ctx = facts.clone();
    if let Value::Object(map) = &mut ctx {
        map.insert("json".into(), Value::Bool(json));
        map.insert(
            "feedback".into(),
            feedback.map_or(Value::Null, |f| Value::String(f.into())),
        );
    }
    let render_one = |template: &str| {
        env()
            .get_template(template)
            .and_then(|t| t.render(Serde(&ctx)))
            .map(|s| s.trim().to_owned())
            .map_err(|e| PromptError {
                template: template.into(),
                message: e.to_string(),
            })
    };
    Ok(Prompt {
        system: render_one("system.j2")?,
        user: render_one(name)?,
        version: version(kind),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_prompt_renders_and_carries_feedback() {
        let facts = json!({
            "scenario": {"title": "The Harbor Strike", "description": "A port town."},
            "scene": {"name": "The Docks", "description": "Wet planks."},
            "present": [{"id": "mara", "name": "Mara", "role": "dock boss", "traits": ["bold"], "standing": 10}],
            "wanted": [{"stakeholder_id": "mara", "action_kind": "threaten", "count": 2}],
            "conflicts": [{"name": "Strike", "phase": "walkout", "intensity": 40, "resolved": false}],
            "stakeholder": {"id": "mara", "name": "Mara", "role": "dock boss", "traits": ["bold"], "goals": [], "relationships": []},
            "standing": 10,
            "stakeholders": [{"id": "mara", "name": "Mara", "role": "dock boss", "standing": 10}],
            "conflict": {"name": "Strike", "description": "Wages."},
            "phase": {"name": "Walkout"},
            "canon": [{"id": "c1", "title": "T", "summary": "S"}],
            "event": {"seq": 3, "summary": "A player threatened Mara."},
            "topic": "the strike", "beat": 1, "intensity": 40, "involved": ["mara"], "turn": 3,
        });
        for kind in JobKind::ALL {
            if template_of(kind).is_none() {
                continue;
            }
            let p = render(kind, &facts, true, None).unwrap();
            assert!(p.system.contains("The Harbor Strike"), "{kind:?}");
            assert!(!p.user.is_empty(), "{kind:?}");
            assert!(p.version.starts_with(kind.as_str()));
            let retry = render(kind, &facts, true, Some("field `line` is missing")).unwrap();
            assert!(retry.user.contains("field `line` is missing"), "{kind:?}");
            assert_eq!(retry.version, p.version);
        }
        assert!(
            render(JobKind::PrepareSceneReactions, &facts, true, None)
                .unwrap()
                .user
                .contains("Mara")
        );
        assert_ne!(
            version(JobKind::NarratePhaseTransition),
            version(JobKind::GenerateBeatDescription)
        );
    }
}

//! Scenarios: the authored world a game is an instance of — scenes, stakeholders (NPCs) with
//! traits, goals and relationships, and conflicts that move through phases as their intensity
//! rises. Authored as TOML; loading checks every cross-reference so that the rules, which trust a
//! loaded scenario, never meet a dangling id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::{ConflictId, PhaseId, SceneId, StakeholderId};

/// The highest conflict intensity; a conflict resolves at or before it.
pub const MAX_INTENSITY: u32 = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short machine name, e.g. `harbor-strike`; what `POST /v1/games` takes.
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub scenes: Vec<Scene>,
    pub stakeholders: Vec<Stakeholder>,
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scene {
    pub id: SceneId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Who is present in this scene.
    pub stakeholders: Vec<StakeholderId>,
    /// Conflicts that actions in this scene move.
    #[serde(default)]
    pub conflicts: Vec<ConflictId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stakeholder {
    pub id: StakeholderId,
    pub name: String,
    #[serde(default)]
    pub role: String,
    /// Lower-case trait words (`bold`, `cautious`, `loyal`, ...); the rules know a vocabulary of
    /// them and treat unknown ones as neutral.
    #[serde(default)]
    pub traits: Vec<String>,
    #[serde(default)]
    pub goals: Vec<String>,
    #[serde(default)]
    pub relationships: Vec<Relationship>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relationship {
    /// Another stakeholder, or `player` for the player characters.
    pub with: String,
    /// -1.0 (hostile) to 1.0 (devoted).
    pub affinity: f32,
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conflict {
    pub id: ConflictId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The stakeholders with a stake in it.
    pub stakeholders: Vec<StakeholderId>,
    /// Intensity at the start of a game (0..=100).
    #[serde(default)]
    pub initial_intensity: u32,
    /// Intensity at which the conflict resolves and becomes canon (1..=100).
    pub resolve_at: u32,
    /// In order; each phase is entered when intensity reaches its `enter_at`. The first phase
    /// must start at 0.
    pub phases: Vec<Phase>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub id: PhaseId,
    pub name: String,
    pub enter_at: u32,
    /// Authored beats of this phase: the fallback text of each beat description.
    #[serde(default)]
    pub beats: Vec<String>,
}

/// A scenario that failed to load: which file, which field, what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: field `{field}`: {message}")]
    Field {
        file: PathBuf,
        field: String,
        message: String,
    },
}

impl ScenarioError {
    /// The offending field path (`conflicts[1].phases[0].enter_at`), when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ScenarioError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl Scenario {
    /// Loads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            file: path.to_owned(),
            source,
        })?;
        Scenario::parse(path, &text)
    }

    /// Parses and validates scenario TOML; `file` only names the source in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ScenarioError::Syntax {
            file: file.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        let scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let message = one_line(&e.into_inner().to_string());
            if field == "." || field.is_empty() {
                ScenarioError::Syntax {
                    file: file.to_owned(),
                    message,
                }
            } else {
                ScenarioError::Field {
                    file: file.to_owned(),
                    field,
                    message,
                }
            }
        })?;
        scenario
            .validate()
            .map_err(|(field, message)| ScenarioError::Field {
                file: file.to_owned(),
                field,
                message,
            })?;
        Ok(scenario)
    }

    pub fn scene(&self, id: &SceneId) -> Option<&Scene> {
        self.scenes.iter().find(|s| &s.id == id)
    }

    pub fn stakeholder(&self, id: &StakeholderId) -> Option<&Stakeholder> {
        self.stakeholders.iter().find(|s| &s.id == id)
    }

    pub fn conflict(&self, id: &ConflictId) -> Option<&Conflict> {
        self.conflicts.iter().find(|c| &c.id == id)
    }

    /// Checks every invariant the rules rely on. Errors are `(field path, what was expected)`.
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: String, msg: String| Err((field, msg));
        if self.scenes.is_empty() {
            return fail("scenes".into(), "expected at least one scene".into());
        }
        if self.stakeholders.is_empty() {
            return fail(
                "stakeholders".into(),
                "expected at least one stakeholder".into(),
            );
        }
        let stakeholders = unique_ids(
            self.stakeholders.iter().map(|s| s.id.as_str()),
            "stakeholders",
        )?;
        let conflicts = unique_ids(self.conflicts.iter().map(|c| c.id.as_str()), "conflicts")?;
        unique_ids(self.scenes.iter().map(|s| s.id.as_str()), "scenes")?;
        let known = |set: &BTreeSet<&str>| set.iter().copied().collect::<Vec<_>>().join(", ");

        for (i, scene) in self.scenes.iter().enumerate() {
            if scene.stakeholders.is_empty() {
                return fail(
                    format!("scenes[{i}].stakeholders"),
                    "expected at least one stakeholder present".into(),
                );
            }
            for (j, s) in scene.stakeholders.iter().enumerate() {
                if !stakeholders.contains(s.as_str()) {
                    return fail(
                        format!("scenes[{i}].stakeholders[{j}]"),
                        format!(
                            "unknown stakeholder `{s}`; expected one of: {}",
                            known(&stakeholders)
                        ),
                    );
                }
            }
            for (j, c) in scene.conflicts.iter().enumerate() {
                if !conflicts.contains(c.as_str()) {
                    return fail(
                        format!("scenes[{i}].conflicts[{j}]"),
                        format!(
                            "unknown conflict `{c}`; expected one of: {}",
                            known(&conflicts)
                        ),
                    );
                }
            }
        }
        for (i, s) in self.stakeholders.iter().enumerate() {
            for (j, r) in s.relationships.iter().enumerate() {
                if r.with != "player" && !stakeholders.contains(r.with.as_str()) {
                    return fail(
                        format!("stakeholders[{i}].relationships[{j}].with"),
                        format!(
                            "unknown stakeholder `{}`; expected `player` or one of: {}",
                            r.with,
                            known(&stakeholders)
                        ),
                    );
                }
                if !(-1.0..=1.0).contains(&r.affinity) {
                    return fail(
                        format!("stakeholders[{i}].relationships[{j}].affinity"),
                        format!("expected a number from -1.0 to 1.0, found {}", r.affinity),
                    );
                }
            }
        }
        for (i, c) in self.conflicts.iter().enumerate() {
            for (j, s) in c.stakeholders.iter().enumerate() {
                if !stakeholders.contains(s.as_str()) {
                    return fail(
                        format!("conflicts[{i}].stakeholders[{j}]"),
                        format!(
                            "unknown stakeholder `{s}`; expected one of: {}",
                            known(&stakeholders)
                        ),
                    );
                }
            }
            if c.phases.is_empty() {
                return fail(
                    format!("conflicts[{i}].phases"),
                    "expected at least one phase".into(),
                );
            }
            unique_ids(
                c.phases.iter().map(|p| p.id.as_str()),
                &format!("conflicts[{i}].phases"),
            )?;
            if c.phases[0].enter_at != 0 {
                return fail(
                    format!("conflicts[{i}].phases[0].enter_at"),
                    format!(
                        "expected 0 for the first phase, found {}",
                        c.phases[0].enter_at
                    ),
                );
            }
            for j in 1..c.phases.len() {
                if c.phases[j].enter_at <= c.phases[j - 1].enter_at {
                    return fail(
                        format!("conflicts[{i}].phases[{j}].enter_at"),
                        format!(
                            "expected more than the previous phase's {}, found {}",
                            c.phases[j - 1].enter_at,
                            c.phases[j].enter_at
                        ),
                    );
                }
            }
            let last = c.phases.last().map_or(0, |p| p.enter_at);
            if c.resolve_at <= last || c.resolve_at > MAX_INTENSITY {
                return fail(
                    format!("conflicts[{i}].resolve_at"),
                    format!(
                        "expected more than the last phase's enter_at ({last}) and at most {MAX_INTENSITY}, found {}",
                        c.resolve_at
                    ),
                );
            }
            if c.initial_intensity >= c.resolve_at {
                return fail(
                    format!("conflicts[{i}].initial_intensity"),
                    format!(
                        "expected less than resolve_at ({}), found {}",
                        c.resolve_at, c.initial_intensity
                    ),
                );
            }
        }
        Ok(())
    }
}

fn unique_ids<'a>(
    ids: impl Iterator<Item = &'a str>,
    field: &str,
) -> Result<BTreeSet<&'a str>, (String, String)> {
    let mut seen = BTreeSet::new();
    for (i, id) in ids.enumerate() {
        if !seen.insert(id) {
            return Err((
                format!("{field}[{i}].id"),
                format!("duplicate id `{id}`; expected ids to be unique"),
            ));
        }
    }
    Ok(seen)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Scenarios compiled into the engine, by name.
pub fn builtin() -> BTreeMap<String, Scenario> {
    const SOURCES: &[(&str, &str)] = &[(
        "harbor-strike.toml",
        include_str!("../scenarios/harbor-strike.toml"),
    )];
    SOURCES
        .iter()
        .map(|(file, text)| {
            let s = Scenario::parse(Path::new(file), text)
                .expect("built-in scenarios are valid (tested)");
            (s.name.clone(), s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(toml: &str, field: &str, expected_fragment: &str) {
        let err = Scenario::parse(Path::new("bad.toml"), toml).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("bad.toml: "), "{text}");
        assert_eq!(err.field(), Some(field), "{text}");
        assert!(text.contains(expected_fragment), "{text}");
    }

    fn sample() -> String {
        include_str!("../scenarios/harbor-strike.toml").to_owned()
    }

    #[test]
    fn builtin_scenario_loads_and_is_big_enough() {
        let all = builtin();
        let s = &all["harbor-strike"];
        assert!(s.scenes.len() >= 3);
        assert!(s.stakeholders.len() >= 6);
        assert!(s.conflicts.len() >= 2);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let bad = sample().replacen("resolve_at = 90", "resolve_at = \"high\"", 1);
        check_err(&bad, "conflicts[0].resolve_at", "expected u32");
    }

    #[test]
    fn missing_field_is_named() {
        let bad = sample().replacen("title = \"The Harbor Strike\"\n", "", 1);
        let err = Scenario::parse(Path::new("bad.toml"), &bad).unwrap_err();
        assert!(err.to_string().contains("missing field `title`"), "{err}");
    }

    #[test]
    fn unknown_reference_is_named() {
        let bad = sample().replacen(
            "stakeholders = [\"mara\", \"brann\", \"iris\"]",
            "stakeholders = [\"mara\", \"nobody\", \"iris\"]",
            1,
        );
        check_err(
            &bad,
            "scenes[0].stakeholders[1]",
            "unknown stakeholder `nobody`",
        );
    }

    #[test]
    fn bad_slug_is_named() {
        let bad = sample().replacen("id = \"docks\"", "id = \"The Docks\"", 1);
        check_err(&bad, "scenes[0].id", "is not a slug");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let bad = sample().replacen(
            "title = \"The Harbor Strike\"",
            "title = \"The Harbor Strike\"\ncolour = \"red\"",
            1,
        );
        let err = Scenario::parse(Path::new("bad.toml"), &bad).unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn phases_must_rise() {
        let bad = sample().replacen("enter_at = 35", "enter_at = 0", 1);
        check_err(
            &bad,
            "conflicts[0].phases[1].enter_at",
            "expected more than the previous phase",
        );
    }

    #[test]
    fn syntax_error_names_the_file() {
        let err = Scenario::parse(Path::new("bad.toml"), "name = ").unwrap_err();
        assert!(matches!(err, ScenarioError::Syntax { .. }), "{err}");
        assert!(err.to_string().starts_with("bad.toml: "), "{err}");
    }
}

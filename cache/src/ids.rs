//! Identifiers. Games and players get UUID v7 ids (time-ordered, so indexes stay append-mostly);
//! scenes, stakeholders and conflicts are human-readable slugs chosen by the scenario author.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered (v7) id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// One running game (an instance of a scenario).
    GameId
);
uuid_id!(
    /// A player of one game.
    PlayerId
);
uuid_id!(
    /// One applied player action; also the id of its entry in the answer.
    ActionId
);
uuid_id!(
    /// A row of `planned_stakeholder_actions`.
    PlannedActionId
);
uuid_id!(
    /// A streamed dialogue reply, carried by the answer and by every `dialogue.*` event.
    RequestId
);

/// Why a string is not a slug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a slug: expected 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit"
)]
pub struct SlugError(pub String);

fn check_slug(s: &str) -> Result<(), SlugError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SlugError(s.to_owned()))
    }
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, SlugError> {
                let s = s.into();
                check_slug(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = SlugError;
            fn try_from(s: String) -> Result<Self, SlugError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = SlugError;
            fn from_str(s: &str) -> Result<Self, SlugError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

slug_id!(
    /// A scene of a scenario, e.g. `docks`.
    SceneId
);
slug_id!(
    /// A non-player character, e.g. `mara`.
    StakeholderId
);
slug_id!(
    /// A conflict of a scenario, e.g. `harbor-strike`.
    ConflictId
);
slug_id!(
    /// A phase of a conflict, e.g. `simmering`.
    PhaseId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "docks", "old-tom", "x_1", "9lives"] {
            assert!(SceneId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Docks", "-x", "a b", "é", &"a".repeat(65)] {
            assert!(SceneId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uuid_ids_round_trip_and_are_v7() {
        let g = GameId::generate();
        assert_eq!(g.as_uuid().get_version_num(), 7);
        assert_eq!(g.to_string().parse::<GameId>().unwrap(), g);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<GameId>(&json).unwrap(), g);
    }
}

/// A digest of the situation in a scene: the scene, who is present, and every conflict's phase.
/// Precomputed actions made for one context are not served in another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContextHash(pub String);

impl fmt::Display for ContextHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

//! The runtime guard behind the lint: hot-path handlers run inside [`hot_path_scope`], and every
//! LLM call first calls [`assert_off_hot_path`], which fails inside that scope (and panics when
//! `HOTPATH_STRICT=1`). What the static lint cannot see still cannot hide.

use std::future::Future;
use std::sync::OnceLock;

tokio::task_local! {
    static HOT_PATH: &'static str;
}

/// An LLM call was attempted from hot-path code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LLM call attempted on the hot path (inside `{0}`); dispatch a background job instead")]
pub struct OnHotPath(pub &'static str);

/// Runs `fut` as hot-path code named `name` (e.g. the handler's route).
pub async fn hot_path_scope<F: Future>(name: &'static str, fut: F) -> F::Output {
    HOT_PATH.scope(name, fut).await
}

/// Whether the current task is inside a hot-path scope, and which.
pub fn current_hot_path() -> Option<&'static str> {
    HOT_PATH.try_with(|name| *name).ok()
}

fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var("HOTPATH_STRICT").is_ok_and(|v| v == "1"))
}

/// `Ok` off the hot path. Inside a hot-path scope: an error, or a panic in strict mode.
pub fn assert_off_hot_path() -> Result<(), OnHotPath> {
    check(strict())
}

fn check(strict: bool) -> Result<(), OnHotPath> {
    match current_hot_path() {
        None => Ok(()),
        Some(name) if strict => panic!("{}", OnHotPath(name)),
        Some(name) => Err(OnHotPath(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fails_inside_the_scope_only() {
        assert_eq!(check(false), Ok(()));
        let inside = hot_path_scope("POST /v1/games/{id}/actions", async { check(false) }).await;
        assert_eq!(inside, Err(OnHotPath("POST /v1/games/{id}/actions")));
        assert_eq!(check(false), Ok(()), "the scope ends with the future");
    }

    #[tokio::test]
    async fn spawned_tasks_leave_the_scope() {
        // A job spawned from a handler runs off the hot path; only the handler's own task is hot.
        let r = hot_path_scope("h", async {
            tokio::spawn(async { check(false) }).await.unwrap()
        })
        .await;
        assert_eq!(r, Ok(()));
    }

    #[tokio::test]
    #[should_panic(expected = "LLM call attempted on the hot path")]
    async fn strict_mode_panics() {
        hot_path_scope("h", async { check(true) }).await.ok();
    }
}

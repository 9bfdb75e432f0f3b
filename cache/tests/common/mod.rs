//! What the conformance suites share: one macro that writes, for every backend, one test per
//! case of the suite — so the output reads `memory::case ... ok`, `redis::case ... ok`.

/// `conformance!([backend, ...], [case, ...])`: for each backend a module whose tests call
/// `suite::case(backend().await)`.
#[macro_export]
macro_rules! conformance {
    ([$($backend:ident),* $(,)?], $cases:tt) => {
        $( $crate::conformance!(@backend $backend, $cases); )*
    };
    (@backend $backend:ident, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::suite::$case(super::$backend().await).await;
                }
            )*
        }
    };
}

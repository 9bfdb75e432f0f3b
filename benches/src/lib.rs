//! `hotpath-benches` — criterion benches of the hot path live in `benches/` (run with
//! `cargo bench -p hotpath-benches`); see `docs/PERFORMANCE.md` for the figures and the machine.
//!
//! `play` — the play simulator ([`play`]): games × players acting like people on a running
//! engine, reporting what share of each piece was served ahead, freshness, jobs and LLM calls
//! per action and the queue over time; `scripts/bench-play` runs it on both deployments.
//!
//! `plot` — line plots over time as SVG ([`plot`]), drawn by the play simulator and by the load
//! generator's `--plot` (`scripts/bench-soak`).

pub mod play;
pub mod plot;

//! `hotpath-benches` — criterion benches of the hot path live in `benches/` (run with
//! `cargo bench -p hotpath-benches`); see `docs/PERFORMANCE.md` for the figures and the machine.

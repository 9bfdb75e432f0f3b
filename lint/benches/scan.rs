//! Speed of a full scan (parse, index, resolve, walk, reachability): this workspace, and a
//! generated workspace of about 100,000 lines written to a temp dir at bench start.

use criterion::{Criterion, criterion_group, criterion_main};
use hotpath_lint::Config;
use std::fmt::Write;
use std::path::Path;

const CRATES: usize = 10;
const FILES_PER_CRATE: usize = 32;
const FNS_PER_FILE: usize = 12;

/// One generated module: a trait, a struct with fields, an impl whose methods use fields,
/// generics, closures, macros and calls into sibling modules and the previous crate.
fn module_source(krate: usize, file: usize) -> String {
    let mut s = String::new();
    let next = (file + 1) % FILES_PER_CRATE;
    let _ = writeln!(s, "//! Generated module {file} of crate {krate}.");
    let _ = writeln!(s, "use crate::common::{{Event, Store}};");
    let _ = writeln!(s, "use std::collections::HashMap;\n");
    let _ = writeln!(
        s,
        "pub trait Rule{file} {{\n    fn apply(&self, e: &Event) -> u32;\n}}\n"
    );
    let _ = writeln!(
        s,
        "pub struct State{file} {{\n    store: Store,\n    counts: HashMap<String, u32>,\n    rules: Vec<Box<dyn Rule{file}>>,\n}}\n"
    );
    let _ = writeln!(s, "impl State{file} {{");
    let _ = writeln!(
        s,
        "    pub fn new() -> Self {{\n        State{file} {{ store: Store::default(), counts: HashMap::new(), rules: Vec::new() }}\n    }}\n"
    );
    for k in 0..FNS_PER_FILE {
        let _ = writeln!(
            s,
            "    /// Step {k}: reads the store, applies the rules, counts."
        );
        let _ = writeln!(s, "    pub fn step_{k}(&mut self, e: &Event) -> u32 {{");
        let _ = writeln!(s, "        let base = self.store.read(e.key());");
        let _ = writeln!(s, "        let scaled = helper_{k}(base);");
        let _ = writeln!(
            s,
            "        for r in &self.rules {{\n            let _ = r.apply(e);\n        }}"
        );
        let _ = writeln!(
            s,
            "        *self.counts.entry(format!(\"step-{k}-{{}}\", e.key())).or_insert(0) += 1;"
        );
        let _ = writeln!(s, "        scaled + crate::m{next}::shared_{k}(base)");
        let _ = writeln!(s, "    }}\n");
    }
    let _ = writeln!(s, "}}\n");
    for k in 0..FNS_PER_FILE {
        let _ = writeln!(s, "fn helper_{k}(x: u32) -> u32 {{");
        let _ = writeln!(
            s,
            "    let v: Vec<u32> = (0..x % 7).map(|i| i * {k}).collect();"
        );
        let _ = writeln!(
            s,
            "    let total = v.iter().copied().fold(0, |a, b| a.wrapping_add(b));"
        );
        let _ = writeln!(
            s,
            "    if total > 1000 {{\n        println!(\"large: {{}}\", total);\n    }}"
        );
        let _ = writeln!(s, "    total\n}}\n");
        let _ = writeln!(s, "pub fn shared_{k}(x: u32) -> u32 {{");
        // `shared_0` walks down the crates to crate 0, which calls the LLM: one long chain
        // from the hot path for the reachability pass to find.
        if k == 0 && krate > 0 {
            let _ = writeln!(s, "    let prev = gen_{}::m{file}::shared_0(x);", krate - 1);
            let _ = writeln!(s, "    prev.wrapping_mul(3)\n}}\n");
        } else if k == 0 {
            let _ = writeln!(
                s,
                "    crate::llm::generate(\"prompt\").len() as u32 + x\n}}\n"
            );
        } else {
            let _ = writeln!(s, "    x.wrapping_mul({k} + 1)\n}}\n");
        }
    }
    s
}

/// Writes the generated workspace and returns its line count.
fn generate(root: &Path) -> usize {
    let mut lines = 0;
    let members: Vec<String> = (0..CRATES).map(|c| format!("\"gen-{c}\"")).collect();
    std::fs::write(
        root.join("Cargo.toml"),
        format!("[workspace]\nmembers = [{}]\n", members.join(", ")),
    )
    .unwrap();
    std::fs::write(
        root.join("hotpath.toml"),
        format!(
            "[hot_path]\nroots = [\"gen_{last}::hot\"]\n[llm]\nsinks = [\"gen_0::llm\"]\n",
            last = CRATES - 1
        ),
    )
    .unwrap();
    for c in 0..CRATES {
        let dir = root.join(format!("gen-{c}"));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!("[package]\nname = \"gen-{c}\"\nversion = \"0.1.0\"\n"),
        )
        .unwrap();
        let mut lib =
            String::from("//! Generated crate.\npub mod common;\npub mod hot;\npub mod llm;\n");
        for f in 0..FILES_PER_CRATE {
            let _ = writeln!(lib, "pub mod m{f};");
            let src = module_source(c, f);
            lines += src.lines().count();
            std::fs::write(dir.join(format!("src/m{f}.rs")), src).unwrap();
        }
        std::fs::write(dir.join("src/lib.rs"), lib).unwrap();
        std::fs::write(
            dir.join("src/common.rs"),
            "#[derive(Default)]\npub struct Store;\nimpl Store {\n    pub fn read(&self, k: &str) -> u32 {\n        k.len() as u32\n    }\n}\npub struct Event(pub String);\nimpl Event {\n    pub fn key(&self) -> &str {\n        &self.0\n    }\n}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("src/llm.rs"),
            "pub fn generate(p: &str) -> String {\n    p.to_string()\n}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("src/hot.rs"),
            "use crate::common::Event;\npub fn handle(e: &Event) -> u32 {\n    let mut s = crate::m0::State0::new();\n    s.step_0(e) + s.step_1(e)\n}\n",
        )
        .unwrap();
    }
    lines
}

fn scan(c: &mut Criterion) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    // This lint's own modules always exist, so the scan of the workspace never depends on
    // the state of the other crates.
    let self_cfg = Config::parse(
        "[hot_path]\nroots = [\"hotpath_lint::cli\"]\n[llm]\nsinks = [\"hotpath_lint::syntax::scan_suppressions\"]\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lines = generate(dir.path());
    let gen_cfg = Config::load(&dir.path().join("hotpath.toml")).unwrap();
    let first = hotpath_lint::check(dir.path(), &gen_cfg).unwrap();
    eprintln!(
        "generated workspace: {lines} lines, {} fns, {} edges, {} violations",
        first.stats.fns,
        first.stats.edges,
        first.violations.len()
    );

    let mut group = c.benchmark_group("scan");
    group.sample_size(10);
    group.bench_function("this_workspace", |b| {
        b.iter(|| hotpath_lint::check(&repo, &self_cfg).unwrap())
    });
    group.bench_function("generated_100k_lines", |b| {
        b.iter(|| hotpath_lint::check(dir.path(), &gen_cfg).unwrap())
    });
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);

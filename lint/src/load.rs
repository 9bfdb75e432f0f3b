//! Loading a workspace: parse every member's files in parallel, assemble the module trees
//! from `lib.rs`/`main.rs` and `mod` declarations, index and resolve, then walk every body
//! (again in parallel) into call edges.
//!
//! syn trees cannot leave the thread that parsed them (their spans index a thread-local
//! source map), so each worker keeps the files it parsed and later walks their bodies itself;
//! only owned skeletons, the shared [`Index`] and edges cross threads.

use crate::calls::{FnWalk, SuppLines, walk_fn};
use crate::error::{Error, Result};
use crate::index::{FileId, FileInfo, FnDef, Index, Instance, ModId};
use crate::syntax::{
    FileSkel, ModSkel, SuppressionComment, file_bodies, lower_file, scan_suppressions,
    splice_item_macros,
};
use crate::workspace::{CrateTarget, rust_files};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

/// The analysable workspace: the index, the call edges of every fn (by `FnId`) and the
/// suppression comments of every file in a module tree.
pub struct Workspace {
    pub index: Index,
    pub edges: Vec<FnWalk>,
    pub suppressions: Vec<(FileId, SuppressionComment)>,
}

struct Parsed {
    skel: FileSkel,
    supps: Vec<SuppressionComment>,
}

type ParseOutcome = std::result::Result<Parsed, (usize, String)>;

enum Job {
    Parse(Vec<PathBuf>),
    Walk(Arc<Index>, Vec<(Instance, PathBuf)>),
}

enum Reply {
    Parsed(Vec<(PathBuf, ParseOutcome)>),
    Walked(Vec<(usize, FnWalk)>),
}

/// Parses, indexes and walks the crates `targets` of the workspace at `root`.
pub fn load(root: &Path, targets: &[CrateTarget]) -> Result<Workspace> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    std::thread::scope(|s| {
        let (reply_tx, reply_rx) = channel::<Reply>();
        let mut job_txs = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = channel::<Job>();
            let reply_tx = reply_tx.clone();
            s.spawn(move || worker(rx, reply_tx));
            job_txs.push(tx);
        }
        drop(reply_tx);
        let mut pool = Pool {
            job_txs,
            reply_rx,
            owner: HashMap::new(),
            parsed: HashMap::new(),
            load: vec![0; workers],
        };
        let result = build(root, targets, &mut pool);
        // Dropping the senders ends the workers before the scope joins them.
        pool.job_txs.clear();
        result
    })
}

struct Pool {
    job_txs: Vec<Sender<Job>>,
    reply_rx: Receiver<Reply>,
    owner: HashMap<PathBuf, usize>,
    parsed: HashMap<PathBuf, ParseOutcome>,
    load: Vec<u64>,
}

impl Pool {
    /// Parses files on the workers, balancing by size, and waits for all of them.
    fn parse(&mut self, mut files: Vec<PathBuf>) {
        files.retain(|f| !self.owner.contains_key(f));
        files.sort();
        files.dedup();
        let mut sized: Vec<(u64, PathBuf)> = files
            .into_iter()
            .map(|f| (std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0), f))
            .collect();
        sized.sort_by_key(|s| std::cmp::Reverse(s.0));
        let mut batches: Vec<Vec<PathBuf>> = vec![Vec::new(); self.job_txs.len()];
        for (size, f) in sized {
            let w = (0..self.load.len())
                .min_by_key(|w| self.load[*w])
                .unwrap_or(0);
            self.load[w] += size + 1;
            self.owner.insert(f.clone(), w);
            batches[w].push(f);
        }
        let mut pending = 0;
        for (w, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                pending += 1;
                let _ = self.job_txs[w].send(Job::Parse(batch));
            }
        }
        while pending > 0 {
            match self.reply_rx.recv() {
                Ok(Reply::Parsed(list)) => {
                    pending -= 1;
                    self.parsed.extend(list);
                }
                Ok(Reply::Walked(_)) | Err(_) => break,
            }
        }
    }
}

fn worker(rx: Receiver<Job>, tx: Sender<Reply>) {
    let mut files: HashMap<PathBuf, (syn::File, SuppLines)> = HashMap::new();
    while let Ok(job) = rx.recv() {
        match job {
            Job::Parse(paths) => {
                let mut out = Vec::new();
                for p in paths {
                    let outcome = match std::fs::read_to_string(&p) {
                        Err(e) => Err((0, format!("cannot read: {e}"))),
                        Ok(src) => match syn::parse_file(&src) {
                            Err(e) => Err((
                                e.span().start().line,
                                format!("syn cannot parse this file: {e}"),
                            )),
                            Ok(mut file) => {
                                splice_item_macros(&mut file.items);
                                let (skel, _) = lower_file(&file);
                                let supps = scan_suppressions(&src);
                                let lines = supps.iter().map(|s| (s.line, s.trailing)).collect();
                                files.insert(p.clone(), (file, lines));
                                Ok(Parsed { skel, supps })
                            }
                        },
                    };
                    out.push((p, outcome));
                }
                if tx.send(Reply::Parsed(out)).is_err() {
                    return;
                }
            }
            Job::Walk(index, instances) => {
                crate::macros::reset_cache();
                let mut out = Vec::new();
                for (inst, path) in instances {
                    let Some((file, supps)) = files.get(&path) else {
                        continue;
                    };
                    let bodies = file_bodies(file);
                    for (i, body) in bodies.iter().enumerate() {
                        let f = inst.base + i;
                        let edges = if body.block.is_some() || body.init.is_some() {
                            walk_fn(&index, f, body, supps)
                        } else {
                            FnWalk::default()
                        };
                        out.push((f, edges));
                    }
                }
                // Release the index before replying: the coordinator takes it back.
                drop(index);
                if tx.send(Reply::Walked(out)).is_err() {
                    return;
                }
            }
        }
    }
}

/// A file waiting to be placed in a module tree.
struct PendingFile {
    module: ModId,
    path: PathBuf,
    /// Where `mod x;` declared at the file's top level looks for `x.rs` / `x/mod.rs`.
    child_dir: PathBuf,
    /// Where the declaring `mod` stood, for "file not found" errors.
    declared_at: Option<(FileId, usize)>,
}

fn build(root: &Path, targets: &[CrateTarget], pool: &mut Pool) -> Result<Workspace> {
    let mut pre = Vec::new();
    let mut seen_dirs = Vec::new();
    for t in targets {
        let src = t.package_dir.join("src");
        if !seen_dirs.contains(&src) {
            rust_files(&src, &mut pre);
            seen_dirs.push(src);
        }
        pre.push(t.root.clone());
    }
    pool.parse(pre);

    let mut ix = Index::default();
    let mut file_ids: HashMap<PathBuf, FileId> = HashMap::new();
    let mut slots: Vec<Option<FnDef>> = Vec::new();
    let mut suppressions = Vec::new();
    let mut pending: Vec<PendingFile> = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        let fid = file_id(&mut ix, &mut file_ids, root, &t.root);
        let m = ix.new_module(t.name.clone(), k, None, fid);
        ix.crates.push(crate::index::Crate {
            name: t.name.clone(),
            root: m,
            is_lib: t.is_lib,
            externs: extern_names(t, targets),
        });
        if t.is_lib {
            ix.libs.insert(t.name.clone(), m);
        }
        let dir = t.root.parent().unwrap_or(root).to_path_buf();
        pending.push(PendingFile {
            module: m,
            path: t.root.clone(),
            child_dir: dir,
            declared_at: None,
        });
    }
    let mut instantiated_files: Vec<bool> = Vec::new();
    while !pending.is_empty() {
        let missing: Vec<PathBuf> = pending
            .iter()
            .filter(|p| !pool.parsed.contains_key(&p.path) && p.path.is_file())
            .map(|p| p.path.clone())
            .collect();
        if !missing.is_empty() {
            pool.parse(missing);
        }
        for p in std::mem::take(&mut pending) {
            let fid = file_id(&mut ix, &mut file_ids, root, &p.path);
            let parsed = match pool.parsed.get(&p.path) {
                Some(Ok(parsed)) => parsed,
                Some(Err((line, msg))) => {
                    return Err(Error::Source {
                        file: ix.files[fid].rel.clone(),
                        line: *line,
                        message: msg.clone(),
                    });
                }
                None => {
                    let (file, line) = match p.declared_at {
                        Some((f, l)) => (ix.files[f].rel.clone(), l),
                        None => (ix.files[fid].rel.clone(), 0),
                    };
                    return Err(Error::Source {
                        file,
                        line,
                        message: format!("module file {} not found", p.path.display()),
                    });
                }
            };
            if instantiated_files.len() <= fid {
                instantiated_files.resize(fid + 1, false);
            }
            if !instantiated_files[fid] {
                instantiated_files[fid] = true;
                for s in &parsed.supps {
                    if s.reason.is_none() {
                        return Err(Error::Source {
                            file: ix.files[fid].rel.clone(),
                            line: s.line,
                            message: "hotpath-lint suppression without a reason: write `// hotpath-lint: allow(reason = \"why this call is vetted\")`".into(),
                        });
                    }
                    suppressions.push((fid, s.clone()));
                }
            }
            ix.modules[p.module].file = fid;
            let base = slots.len();
            slots.resize_with(base + parsed.skel.fn_count, || None);
            ix.instances.push(Instance {
                file: fid,
                module: p.module,
                base,
            });
            let file_dir = p.path.parent().unwrap_or(root).to_path_buf();
            let skel = parsed.skel.root.clone();
            place_module(
                &mut ix,
                &mut slots,
                base,
                p.module,
                &skel,
                &p.child_dir,
                Some(&file_dir),
                fid,
                &mut pending,
            );
        }
    }
    ix.fns = slots
        .into_iter()
        .map(|s| s.expect("every fn slot of an instance is filled by its skeleton"))
        .collect();
    ix.resolve();

    let index = Arc::new(ix);
    let mut per_worker: Vec<Vec<(Instance, PathBuf)>> = vec![Vec::new(); pool.job_txs.len()];
    for inst in &index.instances {
        let path = index.files[inst.file].abs.clone();
        let w = pool.owner.get(&path).copied().unwrap_or(0);
        per_worker[w].push((*inst, path));
    }
    let mut waiting = 0;
    for (w, list) in per_worker.into_iter().enumerate() {
        if !list.is_empty() {
            waiting += 1;
            let _ = pool.job_txs[w].send(Job::Walk(Arc::clone(&index), list));
        }
    }
    let mut edges: Vec<FnWalk> = vec![FnWalk::default(); index.fns.len()];
    while waiting > 0 {
        match pool.reply_rx.recv() {
            Ok(Reply::Walked(list)) => {
                waiting -= 1;
                for (f, e) in list {
                    edges[f] = e;
                }
            }
            Ok(Reply::Parsed(_)) | Err(_) => break,
        }
    }
    pool.job_txs.clear();
    let index = Arc::try_unwrap(index)
        .unwrap_or_else(|_| unreachable!("workers release the index after walking"));
    Ok(Workspace {
        index,
        edges,
        suppressions,
    })
}

#[allow(clippy::too_many_arguments)]
fn place_module(
    ix: &mut Index,
    slots: &mut [Option<FnDef>],
    base: usize,
    m: ModId,
    skel: &ModSkel,
    dir: &Path,
    file_dir: Option<&Path>,
    fid: FileId,
    pending: &mut Vec<PendingFile>,
) {
    let count = slots.len() - base;
    let children = ix.add_items(m, skel, base, &mut slots[base..base + count]);
    for ((name, path_attr, _), (child, inner)) in skel.inline_mods.iter().zip(children) {
        let child_dir = match path_attr {
            Some(p) => dir.join(p),
            None => dir.join(name),
        };
        place_module(
            ix, slots, base, child, &inner, &child_dir, None, fid, pending,
        );
    }
    for decl in &skel.mod_decls {
        // `mod x;` declared twice under opposite cfgs is one module with both files in it.
        let child = match ix.child_module(m, &decl.name) {
            Some(c) => c,
            None => {
                let mpath = format!("{}::{}", ix.modules[m].path, decl.name);
                let child = ix.new_module(mpath, ix.modules[m].krate, Some(m), fid);
                ix.modules[m]
                    .names
                    .entry(decl.name.clone())
                    .or_default()
                    .push(crate::index::Res::Mod(child));
                child
            }
        };
        let by_attr = |p: &String| {
            let path = file_dir.unwrap_or(dir).join(p);
            let cd = path.parent().unwrap_or(dir).to_path_buf();
            (path, cd)
        };
        let mut files: Vec<(PathBuf, PathBuf)> = decl.cfg_paths.iter().map(by_attr).collect();
        match &decl.path_attr {
            Some(p) => files.push(by_attr(p)),
            None => {
                let flat = dir.join(format!("{}.rs", decl.name));
                let default = if flat.is_file() {
                    (flat, dir.join(&decl.name))
                } else {
                    (dir.join(&decl.name).join("mod.rs"), dir.join(&decl.name))
                };
                // With `cfg_attr` paths, the default file is used only by builds where no
                // condition holds, and may rightly not exist.
                if decl.cfg_paths.is_empty() || default.0.is_file() {
                    files.push(default);
                }
            }
        }
        for (path, child_dir) in files {
            pending.push(PendingFile {
                module: child,
                path,
                child_dir,
                declared_at: Some((fid, decl.line)),
            });
        }
    }
}

/// What the renamed dependencies of a target stand for: the library crate of a workspace
/// member with that package name, else the outside crate (`llm-client` → `llm_client`).
fn extern_names(t: &CrateTarget, targets: &[CrateTarget]) -> HashMap<String, String> {
    t.renamed_deps
        .iter()
        .map(|(code, package)| {
            let real = targets
                .iter()
                .find(|o| o.is_lib && o.package == *package)
                .map(|o| o.name.clone())
                .unwrap_or_else(|| package.replace('-', "_"));
            (code.clone(), real)
        })
        .collect()
}

fn file_id(ix: &mut Index, ids: &mut HashMap<PathBuf, FileId>, root: &Path, path: &Path) -> FileId {
    if let Some(id) = ids.get(path) {
        return *id;
    }
    let rel = path
        .strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    ix.files.push(FileInfo {
        abs: path.to_path_buf(),
        rel,
    });
    ids.insert(path.to_path_buf(), ix.files.len() - 1);
    ix.files.len() - 1
}

//! Throwaway real servers for the tests: a `redis-server` and a PostgreSQL cluster, each started
//! in its own temporary directory on a free port of 127.0.0.1 and torn down afterwards. The
//! conformance suites run against these real servers rather than mocks, because what they check
//! (pipelining, hash-tagged keys, `SET NX PX`, Streams, `FOR UPDATE SKIP LOCKED`, unique-key races)
//! is exactly the behaviour a mock would get wrong. A missing server binary makes the test fail
//! with the name of the Debian package to install; nothing is ever silently skipped.
//!
//! Most tests want [`shared_redis`] and [`fresh_postgres_database`]: one server of each kind per
//! test process, started on first use, with an isolated database per test. Tests that kill a
//! server on purpose start their own with [`RedisServer::start`].
//!
//! ```no_run
//! let redis_url = hotpath_testkit::shared_redis().url(); // redis://127.0.0.1:PORT/
//! let pg_url = hotpath_testkit::fresh_postgres_database(); // postgres://postgres@127.0.0.1:PORT/hotpath_test_N
//! # let _ = (redis_url, pg_url);
//! ```
//!
//! Every server runs under a small `sh` watchdog whose stdin is a pipe held only by the test
//! process. Statics are never dropped, so `Drop` alone cannot stop the shared servers; the pipe
//! closes however the test process ends (normal exit, panic, SIGKILL), the watchdog's `read`
//! returns, and it stops the server and removes its directory. Linux only (it reads `/proc`).
//!
//! This crate is deliberately synchronous and std-only (plus `tempfile`), so any test, async or
//! not, can use it without pulling a runtime in. The one exception is behind the `chaos`
//! feature: [`chaos`], the history checker, which drives real engines over HTTP (tokio, reqwest,
//! sqlx) and reads their logs through `hotpath-cache`.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

#[cfg(feature = "chaos")]
pub mod chaos;

/// How long a server may take to answer after it was spawned. Generous, because CI machines
/// under a parallel `cargo test` can be slow; a healthy start takes well under a second.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times to retry on a fresh port when the chosen one was taken between our probe and
/// the server's bind (the probe has to release the port before the server can bind it).
const PORT_ATTEMPTS: usize = 5;

/// How long to wait for a signalled server to exit before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The watchdog, run as `sh -c WATCHDOG sh DIR SIGNAL PROGRAM ARGS...`. It reports the server's
/// pid on stdout so the test process can notice an early death, then blocks on its stdin. The
/// server gets `/dev/null` as stdin so it never holds the pipe itself, and its output goes to
/// `DIR/server.out` so startup failures can be shown in the panic message.
const WATCHDOG: &str = r#"dir=$1; sig=$2; shift 2
"$@" </dev/null >>"$dir/server.out" 2>&1 &
pid=$!
echo "$pid"
read -r _ || :
kill -s "$sig" "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A `redis-server` on 127.0.0.1 with persistence off, in its own temporary directory.
/// Dropping it stops the server and removes the directory.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    process: Option<Supervised>,
}

impl RedisServer {
    /// Starts a new server on a free port and waits until it answers `PING`.
    ///
    /// Panics if `redis-server` is not installed (naming the Debian package) or does not start.
    pub fn start() -> RedisServer {
        let binary = find_on_path("redis-server").unwrap_or_else(|| {
            panic!(
                "hotpath-testkit: `redis-server` is not on PATH. Install the Debian package \
                 `redis-server` (apt-get install redis-server), or run scripts/test, which \
                 installs it."
            )
        });
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn_redis(&binary, port) {
                Ok(process) => {
                    return RedisServer {
                        binary,
                        port,
                        process: Some(process),
                    };
                }
                Err(Died { logs, port_in_use }) => {
                    last_error = logs;
                    if !port_in_use {
                        break;
                    }
                }
            }
        }
        panic!("hotpath-testkit: redis-server did not start:\n{last_error}");
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TCP port, which stays the same across [`stop`](Self::stop) and
    /// [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid, or `None` while it is stopped. For debugging and leak checks.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// The server's temporary directory (log in `redis.log`), or `None` while it is stopped.
    pub fn dir(&self) -> Option<&Path> {
        self.process.as_ref().map(|p| p.dir.path())
    }

    /// Kills the server, to simulate Redis dying under the code being tested. Returns once the
    /// process is gone, so connections to [`port`](Self::port) are refused. Does nothing if it
    /// is already stopped.
    pub fn stop(&mut self) {
        // A paused server would not act on its stop signal until continued.
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        // Dropping the supervisor closes the watchdog's pipe and waits for the server to exit.
        drop(self.process.take());
    }

    /// Freezes the server with `SIGSTOP`: connections stay open and nothing answers, as when
    /// the host or the network between hangs (harder on clients than a refused connection).
    /// Undone by [`resume`](Self::resume); the supervisor still stops it on drop.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a [`pause`](Self::pause)d server run again (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self
            .pid()
            .expect("hotpath-testkit: redis-server is not running");
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("hotpath-testkit: could not run `kill`");
        assert!(
            status.success(),
            "hotpath-testkit: kill -{name} {pid} failed"
        );
    }

    /// Starts the server again on the same port, with empty data (stopping it first if it is
    /// running), and waits until it answers `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let mut last_error = String::new();
        // The same port is required here, so retry it instead of picking another: the only
        // expected failure is a moment where the old socket is not yet released.
        for _ in 0..PORT_ATTEMPTS {
            match spawn_redis(&self.binary, self.port) {
                Ok(process) => {
                    self.process = Some(process);
                    return;
                }
                Err(Died { logs, port_in_use }) => {
                    last_error = logs;
                    if !port_in_use {
                        break;
                    }
                    sleep(Duration::from_millis(200));
                }
            }
        }
        panic!(
            "hotpath-testkit: redis-server did not restart on port {}:\n{last_error}",
            self.port
        );
    }
}

fn spawn_redis(binary: &Path, port: u16) -> Result<Supervised, Died> {
    let dir = temp_dir("hotpath-redis-");
    let dir_arg = dir.path().as_os_str().to_owned();
    let mut log = dir_arg.clone();
    log.push("/redis.log");
    let args: Vec<OsString> = vec![
        "--port".into(),
        port.to_string().into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir_arg,
        "--logfile".into(),
        log,
        "--daemonize".into(),
        "no".into(),
    ];
    // SIGTERM makes redis exit at once; with `--save ''` it writes nothing on the way out.
    let process = Supervised::spawn(dir, "TERM", binary, &args, None);
    process.wait_until_ready(|| redis_answers_ping(port))?;
    Ok(process)
}

fn redis_answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// A PostgreSQL cluster (`initdb` + `postgres`) on 127.0.0.1, superuser `postgres` with trust
/// authentication, durability off for speed. Dropping it stops the server and removes the
/// directory.
///
/// PostgreSQL refuses to run as root, so when the tests run as root, `initdb` and the server
/// run as the `postgres` system user.
pub struct PostgresServer {
    bin_dir: PathBuf,
    port: u16,
    process: Supervised,
}

impl PostgresServer {
    /// Creates a cluster in a temporary directory, starts it on a free port and waits until it
    /// accepts connections.
    ///
    /// Panics if PostgreSQL is not installed (naming the Debian package), or if running as root
    /// and there is no `postgres` user to run it as.
    pub fn start() -> PostgresServer {
        let bin_dir = find_postgres_bin_dir();
        let run_as = if effective_uid() == 0 {
            Some(postgres_system_user())
        } else {
            None
        };
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn_postgres(&bin_dir, port, run_as) {
                Ok(process) => {
                    return PostgresServer {
                        bin_dir,
                        port,
                        process,
                    };
                }
                Err(Died { logs, port_in_use }) => {
                    last_error = logs;
                    if !port_in_use {
                        break;
                    }
                }
            }
        }
        panic!("hotpath-testkit: PostgreSQL did not start:\n{last_error}");
    }

    /// URL of the `postgres` database: `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// URL of database `name` on this server (which need not exist yet).
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid. For debugging and leak checks.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// The cluster's temporary directory (data in `data/`, server output in `server.out`).
    pub fn dir(&self) -> &Path {
        self.process.dir.path()
    }

    /// The directory the PostgreSQL binaries were taken from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Creates an empty database `name` and returns its URL. Panics if `name` is not a plain
    /// identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes) or the database already exists.
    pub fn create_database(&self, name: &str) -> String {
        let plain = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        assert!(
            plain,
            "hotpath-testkit: database name {name:?} is not a plain identifier"
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.database_url(name)
    }

    /// Runs `sql` with `psql` against `database` as the superuser and returns its unaligned,
    /// tuples-only output (e.g. `"1"` for `select 1`). Panics on any error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(postgres_tool(&self.bin_dir, "psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("hotpath-testkit: cannot run psql: {e}"));
        assert!(
            output.status.success(),
            "hotpath-testkit: psql -d {database} -c {sql:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned()
    }
}

fn spawn_postgres(bin_dir: &Path, port: u16, run_as: Option<RunAs>) -> Result<Supervised, Died> {
    let dir = temp_dir("hotpath-pg-");
    if let Some(user) = run_as {
        // tempfile already made it 0700; it only needs to belong to the user the server runs as.
        std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("hotpath-testkit: cannot chown {:?}: {e}", dir.path()));
    }
    let data = dir.path().join("data");

    // -N: no fsync of the new cluster; --no-locale: C collation exists everywhere.
    let mut initdb = Command::new(bin_dir.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "-N",
        ])
        .env("LC_ALL", "C")
        // The test's own working directory may not be readable by the postgres user.
        .current_dir(dir.path())
        .stdin(Stdio::null());
    if let Some(user) = run_as {
        initdb.uid(user.uid).gid(user.gid);
    }
    let output = initdb.output().unwrap_or_else(|e| {
        panic!(
            "hotpath-testkit: cannot run {:?}: {e}",
            bin_dir.join("initdb")
        )
    });
    assert!(
        output.status.success(),
        "hotpath-testkit: initdb failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let mut args: Vec<OsString> = vec!["-D".into(), data.into_os_string()];
    let mut socket_dir = OsString::from("unix_socket_directories=");
    socket_dir.push(dir.path());
    for setting in [
        OsString::from(format!("port={port}")),
        "listen_addresses=127.0.0.1".into(),
        socket_dir,
        "fsync=off".into(),
        "synchronous_commit=off".into(),
        "full_page_writes=off".into(),
        // Each test's pool may hold several connections and tests run in parallel.
        "max_connections=200".into(),
    ] {
        args.push("-c".into());
        args.push(setting);
    }
    // SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, the data is thrown away anyway.
    let process = Supervised::spawn(dir, "QUIT", &bin_dir.join("postgres"), &args, run_as);
    let pg_isready = postgres_tool(bin_dir, "pg_isready");
    process.wait_until_ready(|| {
        Command::new(&pg_isready)
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-t", "2"])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })?;
    Ok(process)
}

/// The directory holding `initdb` and `postgres`: the one of `initdb` on PATH, else the highest
/// version under `/usr/lib/postgresql/*/bin` (where Debian puts them, off PATH).
fn find_postgres_bin_dir() -> PathBuf {
    if let Some(initdb) = find_on_path("initdb") {
        // Follow symlinks such as /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb,
        // so `postgres` and `psql` come from the same installation.
        let real = fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = real.parent()
            && is_executable(&dir.join("postgres"))
        {
            return dir.to_path_buf();
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let bin = entry.path().join("bin");
            if !is_executable(&bin.join("initdb")) || !is_executable(&bin.join("postgres")) {
                continue;
            }
            // Compare "9.6" < "15" < "16" numerically, not as strings.
            let version: Vec<u32> = entry
                .file_name()
                .to_string_lossy()
                .split('.')
                .map(|part| part.parse().unwrap_or(0))
                .collect();
            if best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "hotpath-testkit: PostgreSQL is not installed (no `initdb` on PATH or in \
             /usr/lib/postgresql/*/bin). Install the Debian package `postgresql` \
             (apt-get install postgresql), or run scripts/test, which installs it."
        )
    })
}

/// A client tool from the server's own bin dir if it is there, else from PATH.
fn postgres_tool(bin_dir: &Path, name: &str) -> PathBuf {
    let local = bin_dir.join(name);
    if is_executable(&local) {
        return local;
    }
    find_on_path(name).unwrap_or_else(|| {
        panic!(
            "hotpath-testkit: `{name}` not found in {bin_dir:?} or on PATH. Install the Debian \
             package `postgresql` (it brings the client tools)."
        )
    })
}

#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// The `postgres` system user from /etc/passwd (created by the Debian `postgresql` package).
fn postgres_system_user() -> RunAs {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[0] == "postgres" {
                Some(RunAs {
                    uid: fields[2].parse().ok()?,
                    gid: fields[3].parse().ok()?,
                })
            } else {
                None
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "hotpath-testkit: the tests run as root, PostgreSQL refuses to run as root, and \
                 there is no `postgres` user in /etc/passwd to run it as. Install the Debian \
                 package `postgresql` (it creates that user), or run the tests as a normal user."
            )
        })
}

/// The effective uid, from /proc (no libc dependency), falling back to `id -u`.
fn effective_uid() -> u32 {
    let from_proc = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            // "Uid:\treal\teffective\tsaved\tfs"
            line.split_whitespace().nth(2)?.parse().ok()
        });
    from_proc
        .or_else(|| {
            let out = Command::new("id").arg("-u").output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        })
        .expect("hotpath-testkit: cannot determine the effective uid")
}

// ---------------------------------------------------------------------------------------------
// Shared servers
// ---------------------------------------------------------------------------------------------

/// The Redis server shared by every test in this process, started on first use. Do not stop
/// it; tests that kill Redis start their own [`RedisServer`]. Tests sharing it should keep
/// their keys apart (e.g. by a random game id).
pub fn shared_redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// The PostgreSQL server shared by every test in this process, started on first use.
pub fn shared_postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

/// Creates a new, empty, uniquely named database on [`shared_postgres`] and returns its URL,
/// so every test gets its own database without paying for a server start.
pub fn fresh_postgres_database() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    shared_postgres().create_database(&format!("hotpath_test_{n}"))
}

// ---------------------------------------------------------------------------------------------
// Process supervision
// ---------------------------------------------------------------------------------------------

/// A server process running under the [`WATCHDOG`], plus its temporary directory.
struct Supervised {
    watchdog: Child,
    /// The write end of the watchdog's stdin; dropping it (or this process exiting) is the
    /// signal to stop.
    pipe: Option<ChildStdin>,
    pid: u32,
    dir: TempDir,
}

/// A server that exited during startup, with its output.
struct Died {
    logs: String,
    port_in_use: bool,
}

impl Supervised {
    fn spawn(
        dir: TempDir,
        signal: &str,
        program: &Path,
        args: &[OsString],
        run_as: Option<RunAs>,
    ) -> Supervised {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(dir.path())
            .arg(signal)
            .arg(program)
            .args(args)
            .current_dir(dir.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so a Ctrl-C aimed at `cargo test` does not hit the server
            // directly; the watchdog still sees the pipe close and shuts it down in order.
            .process_group(0);
        if let Some(user) = run_as {
            command.uid(user.uid).gid(user.gid);
        }
        let mut watchdog = command
            .spawn()
            .unwrap_or_else(|e| panic!("hotpath-testkit: cannot run /bin/sh: {e}"));
        let pipe = watchdog.stdin.take();
        let mut line = String::new();
        let stdout = watchdog.stdout.take().expect("watchdog stdout is piped");
        let _ = BufReader::new(stdout).read_line(&mut line);
        let pid = line.trim().parse().unwrap_or_else(|_| {
            panic!("hotpath-testkit: the watchdog for {program:?} did not report a pid")
        });
        Supervised {
            watchdog,
            pipe,
            pid,
            dir,
        }
    }

    /// Polls `ready` until it returns true. Returns the server's output if it exits first;
    /// panics if it neither answers nor exits within [`START_TIMEOUT`].
    fn wait_until_ready(&self, mut ready: impl FnMut() -> bool) -> Result<(), Died> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready() {
                return Ok(());
            }
            if !process_alive(self.pid) {
                let logs = self.logs();
                let port_in_use = logs.contains("in use");
                return Err(Died { logs, port_in_use });
            }
            assert!(
                Instant::now() < deadline,
                "hotpath-testkit: server (pid {}) did not answer within {START_TIMEOUT:?}:\n{}",
                self.pid,
                self.logs()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server wrote: `server.out` and any `*.log` in its directory.
    fn logs(&self) -> String {
        let mut logs = String::new();
        if let Ok(entries) = fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == "server.out" || name.ends_with(".log") {
                    let text = fs::read_to_string(entry.path()).unwrap_or_default();
                    logs.push_str(&format!("--- {name}\n{text}"));
                }
            }
        }
        logs
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Closing the pipe is exactly what happens when the test process exits, so Drop and
        // process exit take the same path through the watchdog.
        drop(self.pipe.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.watchdog.try_wait() {
                Ok(None) => sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
        // The server ignored its signal: force it, so Drop never hangs a test run.
        let _ = Command::new("kill")
            .args(["-s", "KILL", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.watchdog.wait();
    }
}

/// Whether `pid` is a live process (not gone, not a zombie), from `/proc/PID/stat`.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMM) STATE ...": COMM may contain spaces and parentheses, so split at the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X' | 'x'))
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A port that was free a moment ago. The listener must be closed before the server can bind,
/// so another process may grab it in between; callers retry on "address in use".
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("hotpath-testkit: cannot bind a TCP port on 127.0.0.1")
}

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("hotpath-testkit: cannot create a temporary directory")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

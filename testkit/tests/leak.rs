//! The shared servers live in statics, which are never dropped, so they must still die when the
//! test process ends. This test runs itself again as a child process that starts the servers and
//! then either exits normally or is SIGKILLed, and checks that the servers and their temporary
//! directories are gone afterwards.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use hotpath_testkit::{RedisServer, fresh_postgres_database, shared_postgres, shared_redis};

const TEST_NAME: &str = "shared_servers_die_with_the_test_process";
/// Set in the child: how it should end, "exit" or "hang" (to be killed).
const CHILD_MODE: &str = "HOTPATH_TESTKIT_LEAK_CHILD";
const MARKER: &str = "HOTPATH-TESTKIT-SERVERS";

#[test]
fn shared_servers_die_with_the_test_process() {
    match env::var(CHILD_MODE) {
        Ok(mode) => run_child(&mode),
        Err(_) => {
            check_cleanup_after_child("exit");
            check_cleanup_after_child("hang");
        }
    }
}

/// Starts the shared servers and a leaked owned one, reports them, then ends as told.
fn run_child(mode: &str) {
    let redis = shared_redis();
    fresh_postgres_database();
    let pg = shared_postgres();
    // An owned server whose Drop never runs behaves like a static one.
    let own = Box::leak(Box::new(RedisServer::start()));
    let servers = [
        (
            redis.pid().unwrap(),
            redis.port(),
            redis.dir().unwrap().to_path_buf(),
        ),
        (pg.pid(), pg.port(), pg.dir().to_path_buf()),
        (
            own.pid().unwrap(),
            own.port(),
            own.dir().unwrap().to_path_buf(),
        ),
    ];
    for (pid, port, dir) in servers {
        println!("{MARKER} {pid} {port} {}", dir.display());
    }
    println!("{MARKER} done");
    if mode == "hang" {
        sleep(Duration::from_secs(300));
    }
}

fn check_cleanup_after_child(mode: &str) {
    let mut child = Command::new(env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut servers: Vec<(u32, u16, PathBuf)> = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest prints "test NAME ... " without a newline before the test's own output.
        let Some((_, rest)) = line.split_once(MARKER) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields == ["done"] {
            break;
        }
        servers.push((
            fields[0].parse().unwrap(),
            fields[1].parse().unwrap(),
            PathBuf::from(fields[2]),
        ));
    }
    assert_eq!(
        servers.len(),
        3,
        "the child ({mode}) did not report its servers"
    );
    for (pid, _, dir) in &servers {
        assert!(
            process_alive(*pid),
            "server {pid} should run while the child lives"
        );
        assert!(dir.exists());
    }

    if mode == "hang" {
        child.kill().unwrap(); // SIGKILL: no destructor, no atexit, nothing runs in the child
        child.wait().unwrap();
    } else {
        // Keep reading: closing the pipe early would make the child fail writing its summary.
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        assert!(
            child.wait().unwrap().success(),
            "the child test failed:\n{rest:#?}"
        );
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    for (pid, port, dir) in &servers {
        while process_alive(*pid) || dir.exists() {
            assert!(
                Instant::now() < deadline,
                "after the child ({mode}) ended, server {pid} on port {port} is still alive \
                 ({}) or its directory {dir:?} still exists ({})",
                process_alive(*pid),
                dir.exists()
            );
            sleep(Duration::from_millis(20));
        }
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, *port)).is_err(),
            "port {port} still accepts connections after the child ({mode}) ended"
        );
    }
}

/// Gone or a zombie counts as dead: once the watchdog is orphaned, reaping is up to init.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X' | 'x'))
}

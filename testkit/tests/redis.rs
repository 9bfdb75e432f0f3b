//! The Redis server answers, and `stop()` / `restart()` really take it down and bring it back.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};

use hotpath_testkit::{RedisServer, shared_redis};

/// Sends one inline command over raw TCP and returns the reply line.
fn command(port: u16, line: &str) -> String {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to redis");
    stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap().trim_end().to_owned()
}

#[test]
fn shared_redis_answers_ping() {
    let redis = shared_redis();
    assert_eq!(command(redis.port(), "PING"), "+PONG");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/", redis.port()));
    // The shared server is one per process.
    assert_eq!(shared_redis().port(), redis.port());
}

#[test]
fn stop_refuses_connections_and_restart_brings_it_back_empty() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(command(port, "SET hotpath:key 1"), "+OK");
    let dir = redis.dir().unwrap().to_path_buf();

    redis.stop();
    let err = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(redis.pid(), None);
    assert!(!dir.exists(), "stop() removes the temporary directory");
    redis.stop(); // idempotent

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(command(port, "PING"), "+PONG");
    assert_eq!(command(port, "EXISTS hotpath:key"), ":0");
}

#[test]
fn drop_stops_the_server() {
    let redis = RedisServer::start();
    let port = redis.port();
    let dir = redis.dir().unwrap().to_path_buf();
    drop(redis);
    let err = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert!(!dir.exists());
}

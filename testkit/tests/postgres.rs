//! The PostgreSQL server answers, and each created database is a separate database.

use std::net::{Ipv4Addr, TcpStream};
use std::thread;

use hotpath_testkit::{PostgresServer, fresh_postgres_database, shared_postgres};

/// The database name at the end of a URL made by the testkit.
fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[test]
fn created_database_answers_select_1() {
    let url = fresh_postgres_database();
    let pg = shared_postgres();
    assert!(url.starts_with(&format!("postgres://postgres@127.0.0.1:{}/", pg.port())));
    assert_eq!(pg.psql(database_name(&url), "select 1"), "1");
    assert_eq!(pg.psql("postgres", "show fsync"), "off");
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
}

#[test]
fn create_database_gives_distinct_isolated_databases() {
    let pg = shared_postgres();
    let a = pg.create_database("testkit_distinct_a");
    let b = pg.create_database("testkit_distinct_b");
    assert_ne!(a, b);
    let (a, b) = (database_name(&a), database_name(&b));
    assert_eq!(pg.psql(a, "select current_database()"), a);
    assert_eq!(pg.psql(b, "select current_database()"), b);
    // A table made in one is not visible in the other.
    pg.psql(
        a,
        "create table only_in_a (x int); insert into only_in_a values (7)",
    );
    assert_eq!(pg.psql(a, "select x from only_in_a"), "7");
    assert_eq!(pg.psql(b, "select to_regclass('only_in_a') is null"), "t");
}

#[test]
fn fresh_databases_can_be_created_concurrently() {
    let urls: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..6).map(|_| s.spawn(fresh_postgres_database)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut names: Vec<&str> = urls.iter().map(|u| database_name(u)).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), urls.len());
}

#[test]
fn own_server_stops_on_drop() {
    let pg = PostgresServer::start();
    let (port, dir) = (pg.port(), pg.dir().to_path_buf());
    assert_eq!(pg.psql("postgres", "select 1"), "1");
    assert!(dir.join("data").exists());
    drop(pg);
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    assert!(!dir.exists());
}

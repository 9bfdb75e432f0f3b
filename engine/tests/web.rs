//! The web page at `/`, played in Debian's Chromium through its WebDriver (`chromedriver`, the
//! `chromium-driver` package) with the `fantoccini` client, against the real `hotpath serve`.
//!
//! A missing `chromium` or `chromedriver` fails these tests with the packages to install
//! (`scripts/test` installs them): they never skip.
//!
//! `HOTPATH_UPDATE_SCREENSHOT=1` also writes the screenshot to `docs/web-client.png`.

#[path = "common/process.rs"]
mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use process::Served;

const ADMIN: &str = "web-test-admin";

/// Where a Debian program lives, or a failure that says which package to install.
fn require(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed: the browser tests need Debian's `{package}` \
             (apt-get install -y chromium chromium-driver; scripts/test installs them)"
        )
    })
}

/// `chromedriver` on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let chromedriver = require("chromedriver", "chromium-driver");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let chromium = require("chromium", "chromium");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1500", "--force-device-scale-factor=1"],
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Polls `script` (its `return` value) until it is truthy, within `within`.
async fn wait_js(c: &Client, script: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = c.execute(script, vec![]).await.expect("script runs");
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waited {within:?} for `{script}`; page:\n{}",
            c.execute("return document.body.innerText", vec![])
                .await
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    let el = c.find(Locator::Css(css)).await.unwrap();
    el.clear().await.unwrap();
    el.send_keys(text).await.unwrap();
}

async fn select(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// Acts through the form and waits for the answer's article; returns the number of answers.
async fn act(c: &Client, scene: &str, kind: &str, target: &str, text: &str) -> u64 {
    let before = c
        .execute(
            "return document.querySelectorAll('#story .answer:not(.standalone)').length",
            vec![],
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    select(c, "#scene", scene).await;
    select(c, "#kind", kind).await;
    select(c, "#target", target).await;
    fill(c, "#text", text).await;
    c.find(Locator::Css("#act-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let script = format!(
        "return document.querySelectorAll('#story .answer:not(.standalone)').length > {before} \
         || document.getElementById('act-error').textContent"
    );
    wait_js(c, &script, Duration::from_secs(10)).await;
    let error = c
        .find(Locator::Css("#act-error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(error.is_empty(), "the action was refused: {error}");
    before + 1
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-client.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_a_game_streams_a_reply_and_resumes_after_a_reload() {
    let served = Served::start(ADMIN);
    let driver = Driver::start();
    let c = browser(&driver).await;
    let base = served.base.clone();

    // Start a game with the admin token.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_js(
        &c,
        "return document.querySelector('#scenario option[value=\"harbor-strike\"]')",
        Duration::from_secs(10),
    )
    .await;
    fill(&c, "#admin-token", ADMIN).await;
    fill(&c, "#new-name", "Ada").await;
    c.find(Locator::Css("#new-game-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "return !document.getElementById('game').hidden \
         && document.querySelectorAll('#conflicts li').length === 2 \
         && document.getElementById('connection').dataset.state === 'live'",
        Duration::from_secs(10),
    )
    .await;
    let conflicts = c
        .find(Locator::Css("#conflicts"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        conflicts.contains("phase") && conflicts.contains("intensity 20"),
        "{conflicts}"
    );

    // Say something to Mara: the answer shows every piece with a source badge, and her reply
    // streams word by word from dialogue.chunk events until dialogue.done.
    act(
        &c,
        "docks",
        "say",
        "mara",
        "Mara, the guild trusts you. Tell me where the wages went.",
    )
    .await;
    let badges = c
        .execute(
            "const a = document.querySelector('#story .answer');
             return [...a.querySelectorAll('.reaction')].map(r =>
               [r.dataset.source, r.querySelector('.badge').textContent, r.querySelector('.said').textContent]);",
            vec![],
        )
        .await
        .unwrap();
    let badges = badges.as_array().unwrap();
    assert_eq!(
        badges.len(),
        3,
        "three stakeholders at the docks: {badges:?}"
    );
    for b in badges {
        let (source, badge, said) = (b[0].as_str(), b[1].as_str(), b[2].as_str().unwrap());
        assert_eq!(source, badge, "the badge names the piece's source");
        assert!(
            matches!(badge, Some("precomputed" | "cache" | "fallback")),
            "{b:?}"
        );
        assert!(!said.is_empty());
    }
    for piece in ["narration", "social", "canon"] {
        let badge = c
            .find(Locator::Css(&format!("#story .answer .{piece} .badge")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            ["precomputed", "cache", "fallback"].contains(&badge.as_str()),
            "{piece}: {badge}"
        );
    }
    let reply = wait_js(
        &c,
        "const r = document.querySelector('#story .answer .reply[data-state=\"done\"]');
         return r && [r.querySelectorAll('.word').length, r.querySelector('.reply-text').textContent];",
        Duration::from_secs(30),
    )
    .await;
    let words = reply[0].as_u64().unwrap();
    let text = reply[1].as_str().unwrap();
    assert!(words > 3, "the reply arrived in pieces ({words}): {text:?}");
    assert!(!text.trim().is_empty());
    let chunks = c
        .execute(
            "return document.querySelectorAll('#feed li[data-kind=\"dialogue.chunk\"]').length",
            vec![],
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    assert!(chunks >= words, "{chunks} chunk events for {words} words");

    // Wait for the slow path to write ahead, then act twice more: other kinds and targets.
    wait_js(
        &c,
        "return document.querySelector('#feed li[data-kind=\"content.ready\"]')",
        Duration::from_secs(30),
    )
    .await;
    act(&c, "docks", "", "", "Where did the wages go?").await;
    act(
        &c,
        "docks",
        "threaten",
        "brann",
        "Pay the crews or the cranes burn",
    )
    .await;
    wait_js(
        &c,
        "return document.querySelector('#feed li[data-kind=\"state.updated\"]')",
        Duration::from_secs(10),
    )
    .await;
    let shot = c.screenshot().await.unwrap();
    std::fs::write(screenshot_path(), &shot).unwrap();
    if std::env::var_os("HOTPATH_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/web-client.png");
        std::fs::write(docs, &shot).unwrap();
    }

    // Leave the page (its event stream drops), act while it is away, come back: the page
    // resumes with Last-Event-ID and shows what it missed, and keeps the answers it saw.
    let last = c
        .find(Locator::Css("#last-event-id"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(last.contains('-'), "an event id: {last}");
    let session = c
        .execute(
            "return JSON.parse(localStorage.getItem('hotpath.session'))",
            vec![],
        )
        .await
        .unwrap();
    let (game, token) = (
        session["game"].as_str().unwrap().to_owned(),
        session["token"].as_str().unwrap().to_owned(),
    );
    c.goto("about:blank").await.unwrap();
    let missed: Value = reqwest::Client::new()
        .post(format!("{base}/v1/games/{game}/actions"))
        .bearer_auth(&token)
        .json(&json!({"scene_id": "docks", "kind": "help", "text": "I carry sacks with the crews"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seq = missed["seq"].as_u64().expect("the action was recorded");
    c.goto(&format!("{base}/")).await.unwrap();
    let status = wait_js(
        &c,
        &format!(
            "return document.querySelector('#feed li[data-kind=\"action.applied\"][data-id^=\"{seq}-\"]') \
             && document.getElementById('connection').textContent"
        ),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        status
            .as_str()
            .unwrap()
            .contains(&format!("resumed after {last}"))
            || status.as_str().unwrap().contains("resumed after"),
        "{status}"
    );
    let kept = c
        .execute(
            "return document.querySelectorAll('#story .answer:not(.standalone)').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        kept,
        json!(3),
        "the answers seen before the reload are shown again"
    );
    let turn = c
        .find(Locator::Css("#turn"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(turn, "4");

    // The join link: a second player joins in a fresh browser profile state.
    let link = c
        .find(Locator::Css("#join-link-out"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        link.starts_with(&format!("{base}/#game={game}&invite=")),
        "{link}"
    );
    c.execute("localStorage.clear(); sessionStorage.clear();", vec![])
        .await
        .unwrap();
    c.goto(&link).await.unwrap();
    c.refresh().await.unwrap();
    wait_js(
        &c,
        "return document.getElementById('join-link').value.includes('invite=')",
        Duration::from_secs(10),
    )
    .await;
    fill(&c, "#join-name", "Bo").await;
    c.find(Locator::Css("#join-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "return !document.getElementById('game').hidden \
         && document.getElementById('player-name').textContent === 'Bo'",
        Duration::from_secs(10),
    )
    .await;
    act(
        &c,
        "lantern-tavern",
        "ask",
        "kest",
        "Who drinks here on paydays?",
    )
    .await;

    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_from_the_binary_with_a_strict_policy() {
    let served = Served::start(ADMIN);
    let client = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let r = client
            .get(format!("{}{path}", served.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert!(
            header("content-security-policy").contains("default-src 'self'"),
            "{path}"
        );
        let body = r.text().await.unwrap();
        // Nothing is fetched from elsewhere: no absolute URLs to other hosts.
        assert!(!body.contains("https://"), "{path} loads nothing remote");
    }
}

//! The web UI in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `ci/setup.sh`), driven over WebDriver:
//! add a node (and see a bad address refused next to its field), see a bad
//! batch's errors, submit a batch, drain a node mid-batch, watch the tasks
//! page complete without reloading, and read the timeline (bars, migration
//! arrows, speedup). Screenshots go to `target/browser/`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tern_controller::api;
use tern_controller::catalogue::Catalogue;
use tern_controller::client::Client;
use tern_controller::driver::sim::SimCluster;
use tern_controller::engine::{self, EngineConfig};
use tern_controller::timings::TimingTable;

const KEY: &str = "k";

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn artefacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn text(c: &fantoccini::Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits for `css` to exist and its text to satisfy `ok`.
async fn wait_text(
    c: &fantoccini::Client,
    css: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await {
            if let Ok(t) = el.text().await {
                if ok(&t) {
                    return t;
                }
            }
        }
        assert!(t0.elapsed() < timeout, "{css} never matched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_a_batch_watch_it_complete_and_read_the_timeline() {
    for program in ["chromium", "chromedriver"] {
        assert!(
            Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok(),
            "{program} is missing: run `bash ci/setup.sh` (Debian chromium and chromium-driver)"
        );
    }
    // The controller on a simulated cluster.
    let dir = tempfile::tempdir().unwrap();
    let cluster = SimCluster::new(Catalogue::npb(), TimingTable::bundled(), 100.0, 11);
    cluster.add_node("local:4470", "pc", "x86_64", 2.0, 512, KEY);
    cluster.add_node("arm:4470", "virt", "aarch64", 2.0, 1024, KEY);
    cluster.add_node("pc2:4470", "pc", "x86_64", 2.0, 512, KEY);
    let config = EngineConfig {
        lease: Duration::from_millis(800),
        heartbeat: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let service = engine::start(
        &dir.path().join("c.db"),
        config,
        Arc::new(cluster.connector(KEY)),
        Catalogue::npb(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(
        listener,
        api::router(service.controller.clone(), None),
        async {
            let _ = stopped.await;
        },
    ));
    let api = Client::new(&base, None);
    let b = base.clone();
    tokio::task::spawn_blocking(move || {
        let api = Client::new(&b, None);
        api.add_node("local:4470", true).unwrap();
        api.add_node("pc2:4470", false).unwrap();
    })
    .await
    .unwrap();

    // Chromium, headless, with a fresh profile and no background traffic.
    let port = free_port();
    let _driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": "/usr/bin/chromium", "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1400,1000",
            format!("--user-data-dir={}", profile.path().display()) ] }),
    );
    let c = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with chromium");
    let shots = artefacts();

    // Cluster page: a bad address is refused next to its field; a good one joins.
    c.goto(&format!("{base}/cluster")).await.unwrap();
    c.find(Locator::Id("n-addr"))
        .await
        .unwrap()
        .send_keys("ghost:4470")
        .await
        .unwrap();
    c.find(Locator::Id("node-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(
        &c,
        "#node-form .error[data-for=addr]",
        Duration::from_secs(10),
        |t| t.contains("does not answer"),
    )
    .await;
    let field = c.find(Locator::Id("n-addr")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys("arm:4470").await.unwrap();
    c.find(Locator::Id("node-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#nodes", Duration::from_secs(10), |t| {
        t.contains("arm:4470")
    })
    .await;

    // Submit page: a bad batch shows its errors; a bad single task shows them by the field.
    c.goto(&format!("{base}/submit")).await.unwrap();
    c.find(Locator::Css("details summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let area = c.find(Locator::Id("batch-text")).await.unwrap();
    area.send_keys(r#"[{"name":"a","program":"is-S"},{"name":"b","program":"nope"}]"#)
        .await
        .unwrap();
    c.find(Locator::Id("batch-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#batch-errors", Duration::from_secs(10), |t| {
        t.contains("tasks[1].program")
    })
    .await;
    c.find(Locator::Id("task-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let name_error = wait_text(
        &c,
        "#task-form .error[data-for=name]",
        Duration::from_secs(10),
        |t| !t.is_empty(),
    )
    .await;
    assert!(name_error.contains("1-64"), "{name_error}");
    assert_eq!(api.tasks().unwrap().len(), 0, "nothing was submitted");

    // A real batch.
    let programs = ["ep-S", "cg-W", "is-W", "cg-S", "is-S", "ep-S"];
    let tasks: Vec<_> = (0..18)
        .map(|i| json!({ "name": format!("b{i:02}"), "program": programs[i % programs.len()] }))
        .collect();
    let batch = json!({ "policy": "tern", "tasks": tasks }).to_string();
    let area = c.find(Locator::Id("batch-text")).await.unwrap();
    area.clear().await.unwrap();
    area.send_keys(&batch).await.unwrap();
    c.find(Locator::Id("batch-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#submit-result", Duration::from_secs(10), |t| {
        t.contains("18 task(s)")
    })
    .await;

    // Tasks page: drain the second PC mid-batch, then watch it complete live.
    c.goto(&format!("{base}/")).await.unwrap();
    let drained = tokio::task::spawn_blocking({
        let b = base.clone();
        move || {
            let api = Client::new(&b, None);
            let node = api
                .nodes()
                .unwrap()
                .into_iter()
                .find(|n| n.addr == "pc2:4470")
                .unwrap();
            api.drain(node.id).unwrap();
        }
    });
    drained.await.unwrap();
    let done = wait_text(&c, "#count-done", Duration::from_secs(90), |t| t == "18").await;
    assert_eq!(done, "18");
    let rows = c
        .find_all(Locator::Css("#tasks tr[data-state=done]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 18, "the rows updated without a reload");
    let speedup = text(&c, "#speedup").await;
    assert!(speedup.ends_with('%'), "{speedup}");
    std::fs::write(shots.join("tasks.png"), c.screenshot().await.unwrap()).unwrap();

    // Timeline: a bar per run, an arrow per migration, the speedup.
    c.goto(&format!("{base}/timeline")).await.unwrap();
    let bars = c
        .find_all(Locator::Css("#timeline g.bar"))
        .await
        .unwrap()
        .len();
    let arrows = c
        .find_all(Locator::Css("#timeline g.migration"))
        .await
        .unwrap()
        .len();
    let tl = tokio::task::spawn_blocking(move || Client::new(&base, None).timeline(None).unwrap())
        .await
        .unwrap();
    assert_eq!(bars, tl.bars.len());
    assert!(bars >= 18);
    assert_eq!(arrows, tl.arrows.len());
    assert_eq!(text(&c, "#speedup").await, speedup);
    std::fs::write(shots.join("timeline.png"), c.screenshot().await.unwrap()).unwrap();
    c.goto(&format!(
        "{}/cluster",
        c.current_url()
            .await
            .unwrap()
            .origin()
            .ascii_serialization()
    ))
    .await
    .unwrap();
    wait_text(&c, "#nodes", Duration::from_secs(5), |t| {
        t.contains("draining")
    })
    .await;
    std::fs::write(shots.join("cluster.png"), c.screenshot().await.unwrap()).unwrap();
    eprintln!(
        "timeline: {bars} bars, {arrows} migration arrows, speedup {speedup}; screenshots in {}",
        shots.display()
    );
    c.close().await.unwrap();
    let _ = stop.send(());
    service.shutdown();
}

//! The HTTP API and the pages, on a simulated cluster: a batch submitted
//! over HTTP completes and shows on the timeline; bad requests get their
//! field errors and status codes; the token guards a controller that
//! listens beyond loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_controller::api;
use tern_controller::catalogue::Catalogue;
use tern_controller::client::{Client, ClientError};
use tern_controller::driver::sim::SimCluster;
use tern_controller::engine::{self, EngineConfig};
use tern_controller::model::TaskState;
use tern_controller::timings::TimingTable;

const KEY: &str = "k";

struct Running {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: tokio::runtime::Runtime,
    service: Option<engine::Service>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(s) = self.service.take() {
            s.shutdown();
        }
        let _ = &self.runtime;
    }
}

fn serve(token: Option<&str>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let c = SimCluster::new(Catalogue::npb(), TimingTable::bundled(), 2000.0, 5);
    c.add_node("local:4470", "pc", "x86_64", 2.0, 512, KEY);
    c.add_node("arm:4470", "virt", "aarch64", 2.0, 1024, KEY);
    let config = EngineConfig {
        lease: Duration::from_millis(600),
        heartbeat: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let service = engine::start(
        &dir.path().join("c.db"),
        config,
        Arc::new(c.connector(KEY)),
        Catalogue::npb(),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = api::router(service.controller.clone(), token.map(String::from));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(api::serve(listener, router, async {
        let _ = stopped.await;
    }));
    Running {
        url,
        stop: Some(stop),
        runtime,
        service: Some(service),
        _dir: dir,
    }
}

fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let mut resp = r.call().unwrap();
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
        cookies,
    )
}

#[test]
fn a_batch_over_http_completes_and_shows_on_every_page() {
    let s = serve(None);
    let c = Client::new(&s.url, None);
    assert_eq!(c.add_node("local:4470", true).unwrap(), 1);
    c.add_node("arm:4470", false).unwrap();
    let body = br#"{"policy":"tern","tasks":[
        {"name":"a","program":"is-S"},{"name":"b","program":"cg-S"},
        {"name":"c","program":"is-W"},{"name":"d","program":"ep-S"}]}"#;
    let sub = c.submit(body.to_vec()).unwrap();
    assert_eq!(sub.tasks.len(), 4);
    let t0 = Instant::now();
    while !c
        .tasks()
        .unwrap()
        .iter()
        .all(|t| t.state == TaskState::Done)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{:?}",
            c.tasks().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let tl = c.timeline(None).unwrap();
    assert_eq!(tl.summary.done, 4);
    assert!(tl.bars.len() >= 4);
    assert!(tl.summary.t_off.unwrap() > 0.0);
    assert!(
        tl.summary.t_local.is_some() && tl.summary.speedup.is_some(),
        "{:?}",
        tl.summary
    );
    let nodes = c.nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| n.tasks.is_empty()));
    for (page, needle) in [
        ("/", "speedup A"),
        ("/submit", "Batch file"),
        ("/cluster", "arm:4470"),
        ("/timeline", "<svg id=\"timeline\""),
        ("/tasks/1", "VERIFICATION SUCCESSFUL"),
        ("/fragments/tasks", "task-4"),
        ("/static/app.js", "EventSource"),
    ] {
        let (status, text, _) = get(&format!("{}{page}", s.url), &[]);
        assert_eq!(status, 200, "{page}");
        assert!(text.contains(needle), "{page} lacks {needle}: {text}");
    }
    let (status, _, _) = get(&format!("{}/tasks/99", s.url), &[]);
    assert_eq!(status, 404);
}

#[test]
fn bad_requests_get_their_field_errors() {
    let s = serve(None);
    let c = Client::new(&s.url, None);
    c.add_node("local:4470", true).unwrap();
    match c.submit(b"[{\"name\":\"x\",\"program\":\"nope\",\"cpu\":-1}]".to_vec()) {
        Err(ClientError::Fields {
            status: 422,
            errors,
        }) => {
            let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(paths, ["tasks[0].program", "tasks[0].cpu"]);
        }
        other => panic!("{other:?}"),
    }
    c.submit(br#"{"name":"once","program":"is-S"}"#.to_vec())
        .unwrap();
    match c.submit(br#"{"name":"once","program":"is-S"}"#.to_vec()) {
        Err(ClientError::Fields {
            status: 409,
            errors,
        }) => assert_eq!(errors[0].path, "name"),
        other => panic!("{other:?}"),
    }
    let big = vec![b' '; tern_controller::model::MAX_SUBMISSION_BYTES + 10];
    match c.submit(big) {
        Err(ClientError::Fields {
            status: 422,
            errors,
        }) => {
            assert!(errors[0].message.contains("at most"), "{errors:?}")
        }
        other => panic!("{other:?}"),
    }
    for (addr, needle) in [
        ("no-port", "not host:port"),
        ("ghost:4470", "does not answer"),
        ("local:4470", "already"),
    ] {
        match c.add_node(addr, false) {
            Err(ClientError::Fields {
                status: 422,
                errors,
            }) => {
                assert_eq!(errors[0].path, "addr");
                assert!(errors[0].message.contains(needle), "{addr}: {errors:?}");
            }
            other => panic!("{addr}: {other:?}"),
        }
    }
    assert!(matches!(
        c.cancel(42),
        Err(ClientError::Refused { status: 409, .. })
    ));
    assert!(matches!(
        c.remove(1).map(|_| ()),
        Ok(()) | Err(ClientError::Refused { .. })
    ));
}

#[test]
fn a_token_guards_the_controller() {
    let s = serve(Some("s3cret"));
    let (status, _, _) = get(&format!("{}/api/tasks", s.url), &[]);
    assert_eq!(status, 401);
    let (status, _, _) = get(
        &format!("{}/api/tasks", s.url),
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 401);
    let (status, _, _) = get(
        &format!("{}/api/tasks", s.url),
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(status, 200);
    let (status, _, cookies) = get(&format!("{}/?token=s3cret", s.url), &[]);
    assert_eq!(status, 200);
    assert!(cookies[0].starts_with("tern_token=s3cret"), "{cookies:?}");
    let (status, _, _) = get(
        &format!("{}/cluster", s.url),
        &[("Cookie", "tern_token=s3cret")],
    );
    assert_eq!(status, 200);
    assert!(Client::new(&s.url, Some("s3cret".into()))
        .tasks()
        .unwrap()
        .is_empty());
    assert!(api::needs_token(&"0.0.0.0:1".parse().unwrap()));
    assert!(!api::needs_token(&"127.0.0.1:1".parse().unwrap()));
}

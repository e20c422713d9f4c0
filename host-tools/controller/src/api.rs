//! The HTTP server: the JSON API (`/api/…`), the event stream
//! (`/api/events`, server-sent events), the UI's pages and fragments, and
//! the access token that guards all of it when the controller listens
//! beyond loopback (a bearer header, a cookie, or `?token=` once, which
//! sets the cookie).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use crate::engine::{Controller, SubmitError};
use crate::model::{FieldError, PolicyKind, TaskId, MAX_SUBMISSION_BYTES};
use crate::store::StoreError;
use crate::ui::{self, ClusterPage, NodeRows, SubmitPage, TaskRows, TasksPage, TimelinePage};
use crate::views;

/// The server's state.
#[derive(Clone)]
struct App {
    controller: Controller,
    token: Option<String>,
}

/// The cookie that carries the token.
const COOKIE: &str = "tern_token";

/// Builds the router for `controller`; with `token`, every request must present it.
pub fn router(controller: Controller, token: Option<String>) -> Router {
    let app = App { controller, token };
    Router::new()
        .route("/", get(tasks_page))
        .route("/submit", get(submit_page))
        .route("/cluster", get(cluster_page))
        .route("/timeline", get(timeline_page))
        .route("/tasks/{id}", get(task_page))
        .route("/fragments/tasks", get(tasks_fragment))
        .route("/fragments/summary", get(summary_fragment))
        .route("/fragments/nodes", get(nodes_fragment))
        .route("/fragments/timeline", get(timeline_fragment))
        .route("/static/app.js", get(script))
        .route("/static/style.css", get(style))
        .route("/api/tasks", get(list_tasks).post(submit))
        .route("/api/tasks/{id}", get(show_task).delete(cancel))
        .route("/api/nodes", get(list_nodes).post(add_nodes))
        .route("/api/nodes/{id}/drain", post(drain))
        .route("/api/nodes/{id}", axum::routing::delete(remove))
        .route("/api/timeline", get(timeline))
        .route("/api/catalogue", get(catalogue))
        .route("/api/events", get(events))
        // Bodies a little over the submission limit still reach the
        // parser, which answers with the limit; far larger ones are cut.
        .layer(DefaultBodyLimit::max(MAX_SUBMISSION_BYTES + (1 << 20)))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Whether the controller must ask for a token when listening on `addr`.
pub fn needs_token(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// A fresh random token (32 hex digits).
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = app.token.as_deref() else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(&format!("{COOKIE}=")))
        .any(|v| v == token);
    let query = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("token="))
        .any(|v| v == token);
    if bearer == Some(token) || cookie {
        return next.run(request).await;
    }
    if query {
        let mut response = next.run(request).await;
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        )) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "this controller needs its access token: Authorization: Bearer <token>, or open /?token=<token> once" })),
    )
        .into_response()
}

/// An API error as JSON.
struct ApiError(StatusCode, serde_json::Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        )
    }
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, json!({ "error": what }))
}

fn fields(status: StatusCode, errors: Vec<FieldError>) -> ApiError {
    ApiError(status, json!({ "errors": errors }))
}

// ---- pages and fragments ----------------------------------------------

async fn tasks_page(State(app): State<App>) -> Result<TasksPage, ApiError> {
    let store = app.controller.read();
    Ok(TasksPage {
        rows: TaskRows {
            tasks: views::tasks(&store)?,
        },
        summary: views::timeline(&store, None, ui::clock())?.summary,
    })
}

async fn tasks_fragment(State(app): State<App>) -> Result<TaskRows, ApiError> {
    Ok(TaskRows {
        tasks: views::tasks(&app.controller.read())?,
    })
}

/// The batch account alone.
#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "summary.html")]
struct SummaryFragment {
    summary: views::Summary,
}

async fn summary_fragment(State(app): State<App>) -> Result<SummaryFragment, ApiError> {
    Ok(SummaryFragment {
        summary: views::timeline(&app.controller.read(), None, ui::clock())?.summary,
    })
}

async fn submit_page(State(app): State<App>) -> SubmitPage {
    SubmitPage {
        programs: app
            .controller
            .catalogue()
            .programs
            .iter()
            .map(|(n, p)| (n.clone(), p.description.clone(), p.cpu, p.memory_mb))
            .collect(),
        policies: PolicyKind::ALL.iter().map(|p| p.name()).collect(),
    }
}

async fn cluster_page(State(app): State<App>) -> Result<ClusterPage, ApiError> {
    Ok(ClusterPage {
        rows: NodeRows {
            nodes: views::nodes(&app.controller.read(), ui::clock())?,
        },
    })
}

async fn nodes_fragment(State(app): State<App>) -> Result<NodeRows, ApiError> {
    Ok(NodeRows {
        nodes: views::nodes(&app.controller.read(), ui::clock())?,
    })
}

/// `?batch=N`.
#[derive(Deserialize)]
struct BatchQuery {
    batch: Option<i64>,
}

async fn timeline_page(
    State(app): State<App>,
    Query(q): Query<BatchQuery>,
) -> Result<TimelinePage, ApiError> {
    let store = app.controller.read();
    Ok(TimelinePage {
        svg: ui::draw(&views::timeline(&store, q.batch, ui::clock())?),
        batches: store
            .batches()?
            .into_iter()
            .map(|b| (b.id, b.policy, b.tasks))
            .collect(),
    })
}

async fn timeline_fragment(
    State(app): State<App>,
    Query(q): Query<BatchQuery>,
) -> Result<ui::TimelineSvg, ApiError> {
    Ok(ui::draw(&views::timeline(
        &app.controller.read(),
        q.batch,
        ui::clock(),
    )?))
}

async fn task_page(
    State(app): State<App>,
    Path(id): Path<TaskId>,
) -> Result<ui::TaskPage, ApiError> {
    ui::task_page(&app.controller.read(), id)?.ok_or_else(|| not_found(format!("no task {id}")))
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/app.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/style.css"),
    )
}

// ---- JSON -------------------------------------------------------------

async fn list_tasks(State(app): State<App>) -> Result<Json<Vec<views::TaskJson>>, ApiError> {
    Ok(Json(views::tasks(&app.controller.read())?))
}

async fn show_task(State(app): State<App>, Path(id): Path<TaskId>) -> Result<Response, ApiError> {
    let store = app.controller.read();
    let task = views::task(&store, id)?.ok_or_else(|| not_found(format!("no task {id}")))?;
    Ok(Json(json!({
        "task": task,
        "result": store.result(id)?,
        "runs": store.runs()?.into_iter().filter(|r| r.task_id == id).collect::<Vec<_>>(),
        "log": store.task_events(id)?,
    }))
    .into_response())
}

async fn submit(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    match app.controller.submit(body.to_vec()).await {
        Ok(s) => Ok((StatusCode::CREATED, Json(s)).into_response()),
        Err(SubmitError::Invalid(e)) => Err(fields(StatusCode::UNPROCESSABLE_ENTITY, e)),
        Err(SubmitError::Conflict(e)) => Err(fields(StatusCode::CONFLICT, e)),
        Err(SubmitError::Internal(e)) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e }),
        )),
    }
}

async fn cancel(State(app): State<App>, Path(id): Path<TaskId>) -> Result<Response, ApiError> {
    app.controller
        .cancel(id)
        .await
        .map(|()| Json(json!({ "cancelled": id })).into_response())
        .map_err(|e| ApiError(StatusCode::CONFLICT, json!({ "error": e })))
}

async fn list_nodes(State(app): State<App>) -> Result<Json<Vec<views::NodeJson>>, ApiError> {
    Ok(Json(views::nodes(&app.controller.read(), ui::clock())?))
}

/// A node to add: `"host:port"` or `{"addr": …, "local": …}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum NodeRequest {
    Addr(String),
    Full {
        addr: String,
        #[serde(default)]
        local: bool,
    },
}

impl NodeRequest {
    fn parts(self) -> (String, bool) {
        match self {
            NodeRequest::Addr(addr) => (addr, false),
            NodeRequest::Full { addr, local } => (addr, local),
        }
    }
}

/// One node's answer in a batch add.
#[derive(Serialize)]
struct NodeResult {
    addr: String,
    id: Option<i64>,
    error: Option<String>,
}

/// Checks an address is `host:port`.
fn check_addr(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("{addr:?} is not host:port (e.g. 10.0.2.2:4470)")),
    }
}

async fn add_nodes(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let bad = |message: String| {
        fields(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![FieldError {
                path: String::new(),
                message,
            }],
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let batch = value.is_array();
    let requests: Vec<NodeRequest> = if batch {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|r| vec![r])
    }
    .map_err(|_| bad("expected \"host:port\", {\"addr\": \"host:port\", \"local\": false}, or an array of them".into()))?;
    let mut results = Vec::new();
    for r in requests {
        let (addr, local) = r.parts();
        let outcome = match check_addr(&addr) {
            Ok(()) => app.controller.add_node(addr.clone(), local).await,
            Err(e) => Err(e),
        };
        results.push(match outcome {
            Ok(id) => NodeResult {
                addr,
                id: Some(id),
                error: None,
            },
            Err(e) => NodeResult {
                addr,
                id: None,
                error: Some(e),
            },
        });
    }
    let failed = results.iter().any(|r| r.error.is_some());
    let status = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::CREATED
    };
    if !batch {
        let r = &results[0];
        return Ok(match &r.error {
            None => (status, Json(json!({ "id": r.id, "addr": r.addr }))).into_response(),
            Some(e) => (
                status,
                Json(json!({ "errors": [{ "path": "addr", "message": e }] })),
            )
                .into_response(),
        });
    }
    Ok((status, Json(json!({ "results": results }))).into_response())
}

async fn drain(State(app): State<App>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    app.controller
        .drain(id)
        .await
        .map(|()| Json(json!({ "drained": id })).into_response())
        .map_err(|e| ApiError(StatusCode::CONFLICT, json!({ "error": e })))
}

async fn remove(State(app): State<App>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    app.controller
        .remove(id)
        .await
        .map(|()| Json(json!({ "removed": id })).into_response())
        .map_err(|e| ApiError(StatusCode::CONFLICT, json!({ "error": e })))
}

async fn timeline(
    State(app): State<App>,
    Query(q): Query<BatchQuery>,
) -> Result<Json<views::Timeline>, ApiError> {
    Ok(Json(views::timeline(
        &app.controller.read(),
        q.batch,
        ui::clock(),
    )?))
}

async fn catalogue(State(app): State<App>) -> Json<crate::catalogue::Catalogue> {
    Json(app.controller.catalogue().clone())
}

async fn events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(app.controller.subscribe()).map(|item| {
        Ok(match item {
            Ok(json) => Event::default().data(json),
            // Too slow a reader missed changes: it refreshes everything.
            Err(_) => Event::default().data(r#"{"type":"resync"}"#),
        })
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

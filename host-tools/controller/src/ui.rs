//! The web UI: the thesis's three pages (tasks, submit, cluster), a task's
//! page (its result, runs and log) and the timeline, rendered on the
//! server (askama templates in `templates/`). The tables and the timeline
//! are also served as fragments, which `static/app.js` fetches again
//! whenever the event stream reports a change: no page reloads, and every
//! piece of markup is written once.

use askama::Template;
use askama_web::WebTemplate;

use crate::engine::now;
use crate::model::{PolicyKind, TaskId};
use crate::store::{ResultRow, RunRow};
use crate::views::{self, NodeJson, Summary, TaskJson, Timeline};

/// Formats seconds for the axis.
fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    }
}

/// The tasks table's rows.
#[derive(Template, WebTemplate)]
#[template(path = "tasks_rows.html")]
pub struct TaskRows {
    /// The tasks.
    pub tasks: Vec<TaskJson>,
}

/// The tasks page.
#[derive(Template, WebTemplate)]
#[template(path = "tasks.html")]
pub struct TasksPage {
    /// Its rows.
    pub rows: TaskRows,
    /// The latest batch's account.
    pub summary: Summary,
}

/// The submit page.
#[derive(Template, WebTemplate)]
#[template(path = "submit.html")]
pub struct SubmitPage {
    /// The catalogue's programs (name, description, cpu, memory).
    pub programs: Vec<(String, String, f64, u64)>,
    /// The policies.
    pub policies: Vec<&'static str>,
}

/// The cluster table's rows.
#[derive(Template, WebTemplate)]
#[template(path = "nodes_rows.html")]
pub struct NodeRows {
    /// The nodes.
    pub nodes: Vec<NodeJson>,
}

/// The cluster page.
#[derive(Template, WebTemplate)]
#[template(path = "cluster.html")]
pub struct ClusterPage {
    /// Its rows.
    pub rows: NodeRows,
}

/// A lane of the timeline.
pub struct Lane {
    /// Its label.
    pub label: String,
    /// Its top, px.
    pub y: f64,
}

/// A bar of the timeline, placed.
pub struct PlacedBar {
    /// Left, px.
    pub x: f64,
    /// Top, px.
    pub y: f64,
    /// Width, px.
    pub w: f64,
    /// Fill colour.
    pub colour: String,
    /// Tooltip.
    pub title: String,
    /// Label (when it fits).
    pub label: String,
}

/// An arrow of the timeline, placed.
pub struct PlacedArrow {
    /// Start x, px.
    pub x1: f64,
    /// Start y, px.
    pub y1: f64,
    /// End x, px.
    pub x2: f64,
    /// End y, px.
    pub y2: f64,
    /// Tooltip.
    pub title: String,
}

/// An axis tick.
pub struct Tick {
    /// x, px.
    pub x: f64,
    /// Label.
    pub label: String,
}

/// The timeline's drawing.
#[derive(Template, WebTemplate)]
#[template(path = "timeline_svg.html")]
pub struct TimelineSvg {
    /// Its account.
    pub summary: Summary,
    /// Width, px.
    pub width: f64,
    /// Height, px.
    pub height: f64,
    /// Lanes.
    pub lanes: Vec<Lane>,
    /// Bars.
    pub bars: Vec<PlacedBar>,
    /// Arrows.
    pub arrows: Vec<PlacedArrow>,
    /// Ticks.
    pub ticks: Vec<Tick>,
}

/// The timeline page.
#[derive(Template, WebTemplate)]
#[template(path = "timeline.html")]
pub struct TimelinePage {
    /// The drawing.
    pub svg: TimelineSvg,
    /// The batches to choose from (id, policy, tasks).
    pub batches: Vec<(i64, PolicyKind, i64)>,
}

/// A task's page.
#[derive(Template, WebTemplate)]
#[template(path = "task.html")]
pub struct TaskPage {
    /// The task.
    pub task: TaskJson,
    /// Its result.
    pub result: Option<ResultRow>,
    /// Its runs.
    pub runs: Vec<RunRow>,
    /// Its log (time, kind, detail).
    pub log: Vec<(String, String, String)>,
}

const LEFT: f64 = 150.0;
const LANE: f64 = 34.0;
const WIDTH: f64 = 1100.0;

/// A stable colour per program.
fn colour(program: &str) -> String {
    let h = program
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    format!("hsl({}, 55%, 62%)", h % 360)
}

/// Lays out a timeline.
pub fn draw(t: &Timeline) -> TimelineSvg {
    let end = t
        .bars
        .iter()
        .map(|b| b.end)
        .chain(t.arrows.iter().filter_map(|a| a.end))
        .fold(1e-3, f64::max);
    let scale = (WIDTH - LEFT - 20.0) / end;
    let lane_of = |node| t.nodes.iter().position(|n| n.id == node);
    let lanes: Vec<Lane> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Lane {
            label: format!("{} ({}, {} cores)", n.name, n.board, n.cores),
            y: 30.0 + i as f64 * LANE,
        })
        .collect();
    let bars = t
        .bars
        .iter()
        .filter_map(|b| {
            let lane = lane_of(b.node_id)?;
            let w = ((b.end - b.start) * scale).max(1.0);
            Some(PlacedBar {
                x: LEFT + b.start * scale,
                y: lanes[lane].y + 4.0,
                w,
                colour: colour(&b.program),
                title: format!(
                    "{} ({}) {:.2}–{:.2} s{}",
                    b.name,
                    b.program,
                    b.start,
                    b.end,
                    b.outcome
                        .as_deref()
                        .map(|o| format!(", {o}"))
                        .unwrap_or_default()
                ),
                label: if w > 8.0 * b.name.len() as f64 {
                    b.name.clone()
                } else {
                    String::new()
                },
            })
        })
        .collect();
    let arrows = t
        .arrows
        .iter()
        .filter_map(|a| {
            let (from, to) = (lane_of(a.from_node)?, lane_of(a.to_node)?);
            let end = a.end.unwrap_or(a.start);
            Some(PlacedArrow {
                x1: LEFT + a.start * scale,
                y1: lanes[from].y + LANE / 2.0,
                x2: LEFT + end * scale,
                y2: lanes[to].y + LANE / 2.0,
                title: format!(
                    "task {} migrated at {:.2} s{}",
                    a.task_id,
                    a.start,
                    a.downtime_ms
                        .map(|d| format!(", {d} ms downtime"))
                        .unwrap_or_default()
                ),
            })
        })
        .collect();
    let step = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|s| end / s <= 10.0)
    .unwrap_or(7200.0);
    let ticks = (0..=((end / step).floor() as usize))
        .map(|k| Tick {
            x: LEFT + k as f64 * step * scale,
            label: secs(k as f64 * step),
        })
        .collect();
    TimelineSvg {
        summary: t.summary.clone(),
        width: WIDTH,
        height: 40.0 + lanes.len().max(1) as f64 * LANE,
        lanes,
        bars,
        arrows,
        ticks,
    }
}

/// The task page of `id`, if it exists.
pub fn task_page(
    store: &crate::store::Store,
    id: TaskId,
) -> Result<Option<TaskPage>, crate::store::StoreError> {
    let Some(task) = views::task(store, id)? else {
        return Ok(None);
    };
    let t0 = task.submitted_at;
    Ok(Some(TaskPage {
        result: store.result(id)?,
        runs: store
            .runs()?
            .into_iter()
            .filter(|r| r.task_id == id)
            .collect(),
        log: store
            .task_events(id)?
            .into_iter()
            .map(|(at, kind, detail)| (format!("+{:.3} s", at - t0), kind, detail))
            .collect(),
        task,
    }))
}

/// The current time, for views.
pub fn clock() -> f64 {
    now()
}

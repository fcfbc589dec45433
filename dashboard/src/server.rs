//! The dashboard's HTTP routes: pages, live fragments, the JSON API (Ray's
//! Jobs REST shape under `/api/jobs/`), `/metrics`, and the login that puts
//! the token in a cookie.
//!
//! Every route but `/login`, `/logout` and the static assets goes through
//! [`require_token`]: a browser without the cookie is sent to the login page,
//! a script without a bearer token gets 401.

use crate::auth::{self, TokenCheck};
use crate::error::DashboardError;
use crate::history::History;
use crate::jobs::{JobSubmitRequest, JobSupervisor};
use crate::packages::Packages;
use crate::pages::{self, Fragment, View};
use crate::{logs, metrics, training};
use axum::extract::{DefaultBodyLimit, Form, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use oxray_core::{ClusterStatus, NodeStatus};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the dashboard reads the cluster's state from (the head's node).
pub type StatusSource = Arc<dyn Fn() -> ClusterStatus + Send + Sync>;
/// Where the resource sampler reads the nodes from.
pub type NodesSource = Arc<dyn Fn() -> Vec<NodeStatus> + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub status: StatusSource,
    pub supervisor: JobSupervisor,
    pub history: Arc<History>,
    pub check: TokenCheck,
    pub log_dir: PathBuf,
    pub packages: Arc<Packages>,
}

impl AppState {
    fn with_view<R>(&self, f: impl FnOnce(&View) -> R) -> R {
        let status = (self.status)();
        let jobs = self.supervisor.list();
        let runs = training::runs(&jobs);
        let log_files = logs::list(&self.log_dir);
        f(&View {
            status: &status,
            jobs: &jobs,
            runs: &runs,
            log_files: &log_files,
        })
    }
}

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(view_page))
        .route("/jobs", get(view_page))
        .route("/actors", get(view_page))
        .route("/tasks", get(view_page))
        .route("/placement-groups", get(view_page))
        .route("/logs", get(view_page))
        .route("/training", get(view_page))
        .route("/jobs/{id}", get(job_page))
        .route("/fragments/{name}", get(fragment))
        .route("/fragments/job/{id}", get(job_fragment))
        .route("/metrics", get(metrics_text))
        .route("/api/cluster_status", get(cluster_status))
        .route("/api/history", get(history))
        .route("/api/training", get(training_runs))
        .route("/api/logs/{name}", get(log_file))
        .route("/api/jobs/", post(submit_job).get(list_jobs))
        .route("/api/jobs", post(submit_job).get(list_jobs))
        .route("/api/jobs/{id}", get(job_info).delete(delete_job))
        .route("/api/jobs/{id}/logs", get(job_logs))
        .route("/api/jobs/{id}/stop", post(stop_job))
        .route(
            "/api/packages/{digest}",
            get(package_info)
                .put(upload_package)
                .layer(DefaultBodyLimit::max(
                    // The archive's entries carry a little beyond their bytes.
                    oxray_core::MAX_WORKING_DIR_BYTES as usize + (16 << 20),
                )),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/static/{file}", get(asset))
        .merge(protected)
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.check.accepts(request.headers()) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    let is_api = ["/api/", "/metrics", "/fragments/"]
        .iter()
        .any(|prefix| path.starts_with(prefix));
    if is_api {
        let message = "cluster token missing or wrong: send `Authorization: Bearer TOKEN`";
        (StatusCode::UNAUTHORIZED, Json(error_body(message))).into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

fn error_body(message: &str) -> serde_json::Value {
    serde_json::json!({ "error": message })
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = match &self {
            DashboardError::NoSuchJob(_) => StatusCode::NOT_FOUND,
            DashboardError::DuplicateJob(_) | DashboardError::JobNotFinished { .. } => {
                StatusCode::CONFLICT
            }
            DashboardError::BadSubmissionId(_)
            | DashboardError::EmptyEntrypoint
            | DashboardError::WorkingDir { .. }
            | DashboardError::Package { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(error_body(&self.to_string()))).into_response()
    }
}

async fn login_form() -> Html<String> {
    Html(pages::login(false))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    if !state.check.matches(form.token.trim()) {
        eprintln!("oxray: the dashboard refused a login: wrong token");
        return (StatusCode::UNAUTHORIZED, Html(pages::login(true))).into_response();
    }
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&state.check.login_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&auth::logout_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "dashboard.css" => (
            include_str!("../assets/dashboard.css"),
            "text/css; charset=utf-8",
        ),
        "dashboard.js" => (
            include_str!("../assets/dashboard.js"),
            "text/javascript; charset=utf-8",
        ),
        "chart.js" => (
            include_str!("../assets/chart.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn view_page(State(state): State<AppState>, request: Request) -> Html<String> {
    let path = request.uri().path().to_string();
    let title = pages::VIEWS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("Overview", |(_, title)| title);
    let body = state.with_view(|view| pages::view_body(&path, view));
    Html(pages::page(title, &path, &body))
}

async fn job_page(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.supervisor.get(&id) {
        Ok(job) => Html(pages::job_page(&job)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn fragment(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match Fragment::from_name(&name) {
        Some(fragment) => {
            Html(state.with_view(|view| pages::render(fragment, view))).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn job_fragment(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.supervisor.get(&id) {
        Ok(job) => Html(pages::job_details(&job)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let status = (state.status)();
    let jobs = state.supervisor.list();
    let runs = training::runs(&jobs);
    let rpc = oxray_core::rpc_latencies();
    let text = metrics::render(&metrics::Scrape {
        status: &status,
        jobs: &jobs,
        runs: &runs,
        rpc: &rpc,
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn cluster_status(State(state): State<AppState>) -> Json<ClusterStatus> {
    Json((state.status)())
}

async fn history(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({ "samples": state.history.samples() })).into_response()
}

async fn training_runs(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({ "runs": training::runs(&state.supervisor.list()) })).into_response()
}

#[derive(Deserialize)]
struct Offset {
    #[serde(default)]
    offset: u64,
}

async fn log_file(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<Offset>,
) -> Response {
    let Some(path) = logs::resolve(&state.log_dir, &name) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(error_body("not a log file name")),
        )
            .into_response();
    };
    match logs::read_chunk(&path, query.offset) {
        Ok(chunk) => Json(chunk).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(error_body(&format!("{}: {e}", path.display()))),
        )
            .into_response(),
    }
}

async fn submit_job(
    State(state): State<AppState>,
    Json(request): Json<JobSubmitRequest>,
) -> Response {
    match state.supervisor.submit(request) {
        Ok(job) => Json(serde_json::json!({
            "submission_id": job.submission_id,
            "job_id": serde_json::Value::Null,
        }))
        .into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /api/packages/{digest}`: 200 when the head holds that package (the
/// client then skips the upload), else 404.
async fn package_info(State(state): State<AppState>, Path(digest): Path<String>) -> Response {
    match state.packages.get(&digest) {
        Some(_) => Json(serde_json::json!({ "digest": digest })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(error_body(&format!("no package {digest}"))),
        )
            .into_response(),
    }
}

/// `PUT /api/packages/{digest}`: a working directory's archive, checked
/// against the digest and unpacked (off the runtime's threads).
async fn upload_package(
    State(state): State<AppState>,
    Path(digest): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let packages = state.packages.clone();
    let stored =
        tokio::task::spawn_blocking(move || packages.store(&digest, &body).map(|_| digest)).await;
    match stored {
        Ok(Ok(digest)) => Json(serde_json::json!({ "digest": digest })).into_response(),
        Ok(Err(error)) => error.into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(error_body(&e.to_string())),
        )
            .into_response(),
    }
}

async fn list_jobs(State(state): State<AppState>) -> Response {
    Json(state.supervisor.list()).into_response()
}

async fn job_info(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.supervisor.get(&id) {
        Ok(job) => Json(job).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn job_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<Offset>,
) -> Response {
    match state.supervisor.logs(&id, query.offset) {
        Ok(chunk) => Json(chunk).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn stop_job(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.supervisor.stop(&id) {
        Ok(stopped) => Json(serde_json::json!({ "stopped": stopped })).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn delete_job(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.supervisor.delete(&id) {
        Ok(()) => Json(serde_json::json!({ "deleted": true })).into_response(),
        Err(error) => error.into_response(),
    }
}

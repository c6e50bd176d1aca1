//! The actions API (rules, alerts, evaluation, tasks, the outbox and its dead letters),
//! the hosted survey answer page (`/s/{token}`, no sign-in) and the web snippet's pending
//! survey lookup.

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use maud::html;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{ApiError, ApiPath as Path, ApiQuery as Query, Caller};
use super::metrics::{bad, today, with_source};
use super::pages::{bare, PageError};
use super::AppState;
use crate::actions::run;
use crate::actions::{self as act, surveys, Rule};
use crate::share::LinkError;
use crate::store::Role;
use crate::store::{Answered, TaskFilter};

/// The survey routes customers' browsers call: the tracking API's CORS applies to them.
pub fn public_router() -> Router<AppState> {
    Router::new().route("/v1/surveys/pending", get(pending))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/s/{token}", get(survey_page).post(survey_answer))
        .route("/api/v1/rules", get(list_rules).post(create_rule))
        .route("/api/v1/rules/{name}", axum::routing::delete(delete_rule))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/evaluate", post(evaluate))
        .route("/api/v1/tasks", get(list_tasks))
        .route("/api/v1/tasks/{id}", patch(update_task))
        .route("/api/v1/accounts/{id}/tasks", post(create_task))
        .route("/api/v1/accounts/{id}/playbooks", post(start_playbook))
        .route("/api/v1/outbox", get(list_outbox))
        .route("/api/v1/outbox/{id}/retry", post(retry))
}

fn admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

/// `GET /api/v1/rules`: the rules in force, from the config and from the API.
async fn list_rules(
    _caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let config = state.actions.clone();
    let (ready, stored) = with_source(&state, move |store, _| {
        Ok((run::rules(store, &config)?, store.stored_rules()?))
    })
    .await?;
    let rules: Vec<Value> = ready
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r.rule).unwrap_or_default();
            v["source"] = json!(if stored.iter().any(|s| s.name == r.rule.name) {
                "api"
            } else {
                "config"
            });
            v
        })
        .collect();
    Ok(Json(
        json!({"rules": rules, "measures": act::EXTRA_MEASURES.iter().map(|(m, d)| json!({"name": m, "description": d})).collect::<Vec<_>>()}),
    ))
}

/// `POST /api/v1/rules` (admin): adds or replaces an API rule.
async fn create_rule(
    caller: Caller,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    let rule: Rule = serde_json::from_slice(&body).map_err(|e| bad("body", e.to_string()))?;
    let config = state.actions.clone();
    let in_force = with_source(&state, move |store, _| {
        Ok(run::config_in_force(store, &config)?)
    })
    .await?;
    act::prepare(&rule, &in_force).map_err(|reason| {
        let (field, reason) = reason
            .split_once(": ")
            .map(|(f, r)| (f.to_string(), r.to_string()))
            .unwrap_or(("body".into(), reason));
        ApiError::Invalid(vec![(field, reason)])
    })?;
    if state
        .actions
        .ready_rules()
        .map_err(|(k, r)| ApiError::Internal(format!("{k}: {r}")))?
        .iter()
        .any(|r| r.rule.name == rule.name)
    {
        return Err(ApiError::Conflict(format!(
            "rule {} is defined in the config; change it there",
            rule.name
        )));
    }
    let saved = rule.clone();
    with_source(&state, move |store, _| Ok(store.save_rule(&saved)?)).await?;
    state.signals.poke();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(&rule).unwrap_or_default()),
    )
        .into_response())
}

/// `DELETE /api/v1/rules/{name}` (admin): removes an API rule.
async fn delete_rule(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    let target = name.clone();
    if !with_source(&state, move |store, _| Ok(store.delete_rule(&target)?)).await? {
        return Err(ApiError::NotFound(format!(
            "no API rule {name} (config rules are changed in the config)"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct AlertsQuery {
    since: Option<String>,
    account: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/alerts?since=&account=&limit=`: alerts fired, newest first.
async fn list_alerts(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<AlertsQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = super::metrics::date_param(
        "since",
        query.since.as_deref(),
        today() - chrono::Duration::days(30),
    )?;
    let limit = query.limit.unwrap_or(500);
    if !(1..=10_000).contains(&limit) {
        return Err(bad("limit", "must be 1 to 10000"));
    }
    let since_ms = since
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis();
    let alerts = with_source(&state, move |store, _| {
        Ok(run::alerts(
            store,
            since_ms,
            query.account.as_deref(),
            limit,
        )?)
    })
    .await?;
    Ok(Json(json!({"since": since.to_string(), "alerts": alerts})))
}

#[derive(Debug, Deserialize)]
struct EvaluateQuery {
    rule: Option<String>,
    dry_run: Option<bool>,
}

/// `POST /api/v1/alerts/evaluate?rule=&dry_run=` (admin): evaluates now; a dry run
/// records and sends nothing.
async fn evaluate(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<EvaluateQuery>,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let (config, base) = (state.actions.clone(), state.base_url.clone());
    let dry_run = query.dry_run.unwrap_or(false);
    let rule = query.rule.clone();
    let fired = with_source(&state, move |store, s| {
        run::evaluate(store, today(), s, &config, &base, rule.as_deref(), dry_run).map_err(|e| {
            match e {
                crate::store::StoreError::Invalid(reason) => bad("rule", reason),
                other => other.into(),
            }
        })
    })
    .await?;
    Ok(Json(json!({"dry_run": dry_run, "fired": fired})))
}

#[derive(Debug, Deserialize)]
struct TasksQuery {
    status: Option<String>,
    csm: Option<String>,
    account: Option<String>,
}

const TASK_STATUSES: &[&str] = &["open", "snoozed", "done"];

/// `GET /api/v1/tasks?status=&csm=&account=`: CSM tasks, open ones first by due date.
async fn list_tasks(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<TasksQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(status) = query
        .status
        .as_deref()
        .filter(|s| !TASK_STATUSES.contains(s))
    {
        return Err(bad(
            "status",
            format!("{status:?} is not open, snoozed or done"),
        ));
    }
    let tasks = with_source(&state, move |store, _| {
        let filter = TaskFilter {
            status: query.status.as_deref(),
            csm: query.csm.as_deref(),
            account: query.account.as_deref(),
        };
        Ok(run::tasks(store, filter, 1_000)?)
    })
    .await?;
    Ok(Json(json!({"tasks": tasks})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskChange {
    pub status: String,
    pub snoozed_until: Option<String>,
    pub due: Option<String>,
}

/// Checks a task change: the status, a snooze day for `snoozed` (and only then), dates.
pub fn check_task_change(
    change: &TaskChange,
) -> Result<(Option<chrono::NaiveDate>, Option<chrono::NaiveDate>), (String, String)> {
    if !TASK_STATUSES.contains(&change.status.as_str()) {
        return Err((
            "status".into(),
            format!("{:?} is not open, snoozed or done", change.status),
        ));
    }
    let date = |field: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| crate::records::parse_date(t).map_err(|r| (field.to_string(), r)))
            .transpose()
    };
    let snooze = date("snoozed_until", &change.snoozed_until)?;
    match (change.status.as_str(), snooze) {
        ("snoozed", None) => return Err(("snoozed_until".into(), "required to snooze".into())),
        ("snoozed", Some(day)) if day <= today() => {
            return Err(("snoozed_until".into(), "must be after today".into()))
        }
        ("open" | "done", Some(_)) => {
            return Err(("snoozed_until".into(), "only with status snoozed".into()))
        }
        _ => {}
    }
    Ok((snooze, date("due", &change.due)?))
}

/// `PATCH /api/v1/tasks/{id}` (admin): `{"status": "open"|"snoozed"|"done", "snoozed_until", "due"}`.
async fn update_task(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let change: TaskChange =
        serde_json::from_slice(&body).map_err(|e| bad("body", e.to_string()))?;
    let (snooze, due) =
        check_task_change(&change).map_err(|(f, r)| ApiError::Invalid(vec![(f, r)]))?;
    let found = with_source(&state, move |store, _| {
        if !run::update_task(store, id, &change.status, snooze, due)? {
            return Ok(None);
        }
        Ok(run::tasks(store, TaskFilter::default(), 100_000)?
            .into_iter()
            .find(|t| t["id"] == id))
    })
    .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTaskBody {
    title: String,
    /// YYYY-MM-DD; a week from today when absent.
    due: Option<String>,
}

/// `POST /api/v1/accounts/{id}/tasks` (admin): `{"title", "due"?}`: a task made by hand for
/// the account's CSM; answers the task as listed.
async fn create_task(
    caller: Caller,
    State(state): State<AppState>,
    Path(account): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    let new: NewTaskBody = serde_json::from_slice(&body).map_err(|e| bad("body", e.to_string()))?;
    let due = match new.due.as_deref() {
        Some(text) => crate::records::parse_date(text).map_err(|r| bad("due", r))?,
        None => today() + chrono::Duration::days(DEFAULT_DUE_DAYS),
    };
    act::check_task(&new.title, due, today()).map_err(|e| ApiError::Invalid(vec![e]))?;
    let id = account.clone();
    let made = with_source(&state, move |store, _| {
        let Some(task) = run::add_task(store, &id, &new.title, due, today())? else {
            return Ok(None);
        };
        Ok(account_tasks(store, &id, &[task])?.pop())
    })
    .await?;
    match made {
        Some(task) => Ok((StatusCode::CREATED, Json(task)).into_response()),
        None => Err(ApiError::NotFound(format!("no account {account}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybookBody {
    playbook: String,
}

/// `POST /api/v1/accounts/{id}/playbooks` (admin): `{"playbook"}`: its steps become tasks
/// for the account's CSM, each due its days from today; answers the tasks made.
async fn start_playbook(
    caller: Caller,
    State(state): State<AppState>,
    Path(account): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    let asked: PlaybookBody =
        serde_json::from_slice(&body).map_err(|e| bad("body", e.to_string()))?;
    let playbooks = state.actions.playbooks_in_force();
    let Some(playbook) = playbooks.get(&asked.playbook).cloned() else {
        let known: Vec<&String> = playbooks.keys().collect();
        return Err(ApiError::Invalid(vec![(
            "playbook".into(),
            format!("no playbook {:?}; known: {known:?}", asked.playbook),
        )]));
    };
    let id = account.clone();
    let made = with_source(&state, move |store, _| {
        let Some(ids) = run::start_playbook(store, &id, &playbook, today())? else {
            return Ok(None);
        };
        Ok(Some(account_tasks(store, &id, &ids)?))
    })
    .await?;
    match made {
        Some(tasks) => Ok((
            StatusCode::CREATED,
            Json(json!({"account_id": account, "playbook": asked.playbook, "tasks": tasks})),
        )
            .into_response()),
        None => Err(ApiError::NotFound(format!("no account {account}"))),
    }
}

/// The tasks `ids` of `account` as the API lists them.
fn account_tasks(
    store: &(impl crate::store::Records + crate::store::Tasks + ?Sized),
    account: &str,
    ids: &[i64],
) -> Result<Vec<Value>, crate::store::StoreError> {
    let filter = TaskFilter {
        account: Some(account),
        ..TaskFilter::default()
    };
    Ok(run::tasks(store, filter, 100_000)?
        .into_iter()
        .filter(|t| t["id"].as_i64().is_some_and(|t| ids.contains(&t)))
        .collect())
}

/// Days until a task made by hand is due when no day is given.
pub const DEFAULT_DUE_DAYS: i64 = 7;

#[derive(Debug, Deserialize)]
struct OutboxQuery {
    status: Option<String>,
}

/// `GET /api/v1/outbox?status=pending|sent|dead`: notifications (default: the dead letters).
async fn list_outbox(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<OutboxQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = query.status.unwrap_or_else(|| "dead".into());
    if !["pending", "sent", "dead"].contains(&status.as_str()) {
        return Err(bad(
            "status",
            format!("{status:?} is not pending, sent or dead"),
        ));
    }
    let shown = status.clone();
    let messages = with_source(&state, move |store, _| {
        Ok(run::outbox(store, &shown, 1_000)?)
    })
    .await?;
    Ok(Json(json!({"status": status, "messages": messages})))
}

/// `POST /api/v1/outbox/{id}/retry` (admin): a dead letter goes back in line.
async fn retry(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    if !with_source(&state, move |store, _| Ok(run::retry(store, id)?)).await? {
        return Err(ApiError::NotFound(format!("no dead message {id}")));
    }
    Ok(Json(json!({"id": id, "status": "pending"})))
}

// ---- the hosted survey page ----

fn survey_refused(status: StatusCode, text: &str) -> Response {
    (
        status,
        bare(
            "Survey",
            html! { main.narrow id="main" { h1 { "Survey" } p.error role="alert" { (text) } } },
        ),
    )
        .into_response()
}

/// The send a token names, or the page saying why not.
async fn survey_of(
    state: &AppState,
    token: &str,
) -> Result<Result<run::SurveySend, Response>, PageError> {
    let secret = with_source(state, |store, _| {
        Ok(crate::users::secret(store, run::SURVEY_SECRET)?)
    })
    .await?;
    let id = match crate::share::verify_payload(&secret, token, chrono::Utc::now().timestamp()) {
        Ok(payload) => payload
            .strip_prefix("survey\n")
            .and_then(|id| id.parse::<i64>().ok()),
        Err(LinkError::Expired) => {
            return Ok(Err(survey_refused(
                StatusCode::GONE,
                "This survey link has expired. Thank you anyway!",
            )))
        }
        Err(LinkError::Invalid | LinkError::Revoked) => None,
    };
    let Some(id) = id else {
        return Ok(Err(survey_refused(
            StatusCode::FORBIDDEN,
            "This survey link is not valid.",
        )));
    };
    match with_source(state, move |store, _| Ok(run::survey_send(store, id)?)).await? {
        Some(send) if send.answered => Ok(Err(survey_refused(
            StatusCode::CONFLICT,
            "This survey was answered already. Thank you!",
        ))),
        Some(send) => Ok(Ok(send)),
        None => Ok(Err(survey_refused(
            StatusCode::FORBIDDEN,
            "This survey link is not valid.",
        ))),
    }
}

/// `GET /s/{token}`: the question, no sign-in.
pub async fn survey_page(
    State(state): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Result<Response, PageError> {
    let send = match survey_of(&state, &token).await? {
        Ok(send) => send,
        Err(refused) => return Ok(refused),
    };
    let (low, high) = surveys::scale(&send.kind).unwrap_or((0, 10));
    Ok(bare("Survey", html! {
        main.narrow id="main" {
            h1 { (send.account_name) }
            form.stack method="post" {
                fieldset.scale {
                    legend { (surveys::question(&send.kind)) }
                    @for score in low..=high {
                        label.choice { input type="radio" name="score" value=(score) required; " "
                            @if send.kind == "go_live_recommend" { (if score == 1 { "yes" } else { "no" }) } @else { (score) } }
                    }
                }
                label { "Anything you want to add? (optional)" textarea name="comment" rows="3" maxlength=(surveys::COMMENT_CHARS_MAX) {} }
                button type="submit" { "Send" }
            }
        }
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct AnswerForm {
    score: String,
    comment: Option<String>,
}

/// `POST /s/{token}`: one answer per link; stored as a survey response at once.
pub async fn survey_answer(
    State(state): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
    Form(form): Form<AnswerForm>,
) -> Result<Response, PageError> {
    if form
        .comment
        .as_deref()
        .is_some_and(|c| c.trim().chars().count() > surveys::COMMENT_CHARS_MAX)
    {
        // Refused whole rather than cut: the respondent's words are not silently lost.
        let text = format!(
            "comment: longer than {} characters; shorten it and send again.",
            surveys::COMMENT_CHARS_MAX
        );
        return Ok(survey_refused(StatusCode::PAYLOAD_TOO_LARGE, &text));
    }
    let send = match survey_of(&state, &token).await? {
        Ok(send) => send,
        Err(refused) => return Ok(refused),
    };
    let (low, high) = surveys::scale(&send.kind).unwrap_or((0, 10));
    let score: i64 = form
        .score
        .parse()
        .ok()
        .filter(|s| (low..=high).contains(s))
        .ok_or_else(|| PageError::bad_request(format!("score: must be {low} to {high}")))?;
    let comment = form
        .comment
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    let id = send.id;
    let stored = with_source(&state, move |store, _| {
        Ok(run::answer(store, id, score, comment.as_deref())?)
    })
    .await?;
    match stored {
        Answered::Stored(_) => {
            state.signals.poke();
            Ok(bare("Thank you", html! { main.narrow id="main" { h1 { "Thank you!" } p role="status" { "Your answer was recorded." } } }).into_response())
        }
        Answered::AlreadyAnswered => Ok(survey_refused(
            StatusCode::CONFLICT,
            "This survey was answered already. Thank you!",
        )),
        Answered::NoSuchSurvey => Ok(survey_refused(
            StatusCode::FORBIDDEN,
            "This survey link is not valid.",
        )),
    }
}

#[derive(Debug, Deserialize)]
pub struct PendingQuery {
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
    #[serde(rename = "userId")]
    user_id: String,
}

/// `GET /v1/surveys/pending?userId=` with the write key as the Basic auth user name (as
/// `/v1` calls send it; `writeKey=` in the query also works, but proxies log queries): for
/// the web snippet, a link to the newest unanswered survey sent to this person in the last
/// 30 days (204 when none).
pub async fn pending(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(query): axum::extract::Query<PendingQuery>,
) -> Response {
    let from_header = match super::segment::header_source(&state, &headers) {
        Ok(source) => source,
        Err(response) => return response,
    };
    let from_query = super::segment::body_source(&state, query.write_key.as_deref());
    if from_header.or(from_query).is_none() {
        return (StatusCode::UNAUTHORIZED, Json(json!({"success": false, "error": "unknown write key; send it as the Basic auth user name"}))).into_response();
    }
    if query.user_id.is_empty() || query.user_id.len() > crate::limits::ID_BYTES_MAX {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"success": false, "field": "userId", "error": "1 to 256 bytes"})),
        )
            .into_response();
    }
    let (base, config) = (state.base_url.clone(), state.actions.clone());
    let since = chrono::Utc::now().timestamp_millis() - 30 * 86_400_000;
    let found = with_source(&state, move |store, _| {
        let days = run::config_in_force(store, &config)?
            .surveys
            .token_valid_days;
        Ok(match store.pending_survey(&query.user_id, since)? {
            Some(id) => Some(run::survey_link(store, id, days, &base)?),
            None => None,
        })
    })
    .await;
    match found {
        Ok(Some(url)) => Json(json!({"url": url})).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

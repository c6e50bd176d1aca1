//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, built with utoipa from the
//! same record spec (`records::KINDS`) that the handlers and the store use, so the
//! document cannot drift from the code.

use std::sync::OnceLock;

use utoipa::openapi::content::Content;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApiBuilder, Paths, Ref, RefOr, Required,
};

use crate::limits;
use crate::records::{self, Column, ColumnType, Filter, Kind};

/// The document as JSON text, built once.
pub fn document() -> String {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            build()
                .to_pretty_json()
                .expect("invariant: the document serializes")
        })
        .clone()
}

fn schema_name(kind: &Kind) -> String {
    kind.singular
        .split('_')
        .map(|w| w[..1].to_uppercase() + &w[1..])
        .collect()
}

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn typed(ty: Type, nullable: bool) -> ObjectBuilder {
    let schema_type = if nullable {
        SchemaType::from_iter([ty, Type::Null])
    } else {
        SchemaType::from(ty)
    };
    ObjectBuilder::new().schema_type(schema_type)
}

fn column_schema(column: &Column, nullable: bool) -> Schema {
    let builder = match column.ty {
        ColumnType::Id => typed(Type::String, nullable)
            .min_length(Some(1))
            .max_length(Some(limits::ID_BYTES_MAX)),
        ColumnType::Text => {
            typed(Type::String, nullable).max_length(Some(limits::RECORD_TEXT_BYTES_MAX))
        }
        ColumnType::Date => {
            typed(Type::String, nullable).format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
        }
        ColumnType::DateTime => typed(Type::String, nullable)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        ColumnType::Count => typed(Type::Integer, nullable).minimum(Some(0)),
        ColumnType::Money => typed(Type::Number, nullable).minimum(Some(0)),
        ColumnType::Number => typed(Type::Number, nullable),
        ColumnType::Bool => typed(Type::Boolean, nullable),
        ColumnType::Currency => typed(Type::String, nullable).pattern(Some("^[A-Z]{3}$")),
        ColumnType::Timezone => typed(Type::String, nullable).examples(["Europe/Stockholm"]),
        ColumnType::Enum(values) => {
            let mut all: Vec<serde_json::Value> =
                values.iter().map(|v| serde_json::Value::from(*v)).collect();
            if nullable {
                all.push(serde_json::Value::Null);
            }
            typed(Type::String, nullable).enum_values(Some(all))
        }
        ColumnType::Score => typed(Type::Integer, nullable),
    };
    builder.description(Some(column.doc)).into()
}

/// The record as returned: every column present (null when empty) plus traits.
fn record_schema(kind: &Kind) -> Schema {
    let mut object = ObjectBuilder::new().schema_type(Type::Object);
    for column in kind.columns {
        object = object
            .property(column.name, column_schema(column, !column.required))
            .required(column.name);
    }
    object
        .property("traits", traits_schema())
        .required("traits")
        .into()
}

/// The record as sent: required columns must be there; unknown fields are refused.
fn input_schema(kind: &Kind) -> Schema {
    let mut object = ObjectBuilder::new().schema_type(Type::Object);
    for column in kind.columns {
        object = object.property(column.name, column_schema(column, !column.required));
        if column.required {
            object = object.required(column.name);
        }
    }
    object
        .property("traits", traits_schema())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

fn traits_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .description(Some("extra fields (CSV columns not in the spec)"))
        .into()
}

fn page_schema(kind: &Kind) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "items",
            ArrayBuilder::new().items(reference(&schema_name(kind))),
        )
        .required("items")
        .property(
            "next_cursor",
            typed(Type::String, true).description(Some(
                "pass as ?cursor= for the next page; null on the last page",
            )),
        )
        .required("next_cursor")
        .into()
}

fn problem_schema() -> Schema {
    // One shape for both kinds of error item: a record's field, or an import's row and column.
    let error_item = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("field", typed(Type::String, false))
        .property("row", typed(Type::Integer, false))
        .property("column", typed(Type::String, false))
        .property("reason", typed(Type::String, false))
        .required("reason");
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("RFC 9457 problem details"))
        .property("type", typed(Type::String, false))
        .required("type")
        .property("title", typed(Type::String, false))
        .required("title")
        .property("status", typed(Type::Integer, false))
        .required("status")
        .property("detail", typed(Type::String, false))
        .required("detail")
        .property("field", typed(Type::String, false))
        .property("errors", ArrayBuilder::new().items(error_item))
        .property("error_count", typed(Type::Integer, false))
        .property("rows", typed(Type::Integer, false))
        .into()
}

fn free_object(description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .description(Some(description))
        .into()
}

fn json_response(description: &str, schema: RefOr<Schema>) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(schema)))
        .build()
}

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            Content::new(Some(reference("Problem"))),
        )
        .build()
}

fn path_param(name: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(
            typed(Type::String, false)
                .min_length(Some(1))
                .max_length(Some(limits::ID_BYTES_MAX)),
        ))
        .build()
}

fn query_param(name: &str, schema: Schema, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

fn with_common(op: OperationBuilder, write: bool) -> OperationBuilder {
    let op = op
        .response("401", problem("no or unknown bearer token"))
        .response("400", problem("a bad parameter or body"))
        .response(
            "414",
            ResponseBuilder::new().description("URI too long").build(),
        );
    if write {
        op.response("403", problem("the token's role may only read"))
    } else {
        op
    }
}

fn list_operation(kind: &Kind) -> OperationBuilder {
    let mut op = OperationBuilder::new()
        .operation_id(Some(format!("list_{}", kind.name)))
        .summary(Some(format!(
            "List {} in key order, a page at a time",
            kind.name
        )))
        .tag(kind.name)
        .parameter(query_param(
            "limit",
            typed(Type::Integer, false)
                .minimum(Some(1))
                .maximum(Some(limits::API_PAGE_ROWS_MAX))
                .into(),
            "records per page (default 100)",
        ))
        .parameter(query_param(
            "cursor",
            typed(Type::String, false).into(),
            "next_cursor of the previous page",
        ));
    for column in kind.columns {
        match column.filter {
            Filter::Equals => {
                op = op.parameter(query_param(
                    column.name,
                    column_schema(column, false),
                    column.doc,
                ))
            }
            Filter::Range => {
                op = op
                    .parameter(query_param(
                        &format!("{}_from", column.name),
                        column_schema(column, false),
                        "at or after",
                    ))
                    .parameter(query_param(
                        &format!("{}_to", column.name),
                        column_schema(column, false),
                        "at or before",
                    ));
            }
            Filter::None => {}
        }
    }
    with_common(
        op.response(
            "200",
            json_response("a page", reference(&format!("{}Page", schema_name(kind)))),
        ),
        false,
    )
}

fn record_operations(kind: &Kind, key_params: &[&str]) -> PathItem {
    let name = schema_name(kind);
    let with_key = |mut op: OperationBuilder| {
        for k in key_params {
            op = op.parameter(path_param(k));
        }
        op
    };
    let body = RequestBodyBuilder::new()
        .content(
            "application/json",
            Content::new(Some(reference(&format!("{name}Input")))),
        )
        .required(Some(Required::True))
        .build();
    let get = with_common(
        with_key(
            OperationBuilder::new()
                .operation_id(Some(format!("get_{}", kind.singular)))
                .tag(kind.name),
        )
        .response("200", json_response("the record", reference(&name)))
        .response("404", problem("no such record")),
        false,
    );
    let put = with_common(
        with_key(
            OperationBuilder::new()
                .operation_id(Some(format!("put_{}", kind.singular)))
                .tag(kind.name),
        )
        .summary(Some("Create or replace the record (traits are merged)"))
        .request_body(Some(body))
        .response("200", json_response("replaced", reference(&name)))
        .response("201", json_response("created", reference(&name)))
        .response("413", problem("body too large")),
        true,
    );
    let delete = with_common(
        with_key(
            OperationBuilder::new()
                .operation_id(Some(format!("delete_{}", kind.singular)))
                .tag(kind.name),
        )
        .response("204", ResponseBuilder::new().description("deleted").build())
        .response("404", problem("no such record"))
        .response("409", problem("other records refer to it")),
        true,
    );
    let mut item = PathItem::new(HttpMethod::Get, get.build());
    item.merge_operations(PathItem::new(HttpMethod::Put, put.build()));
    item.merge_operations(PathItem::new(HttpMethod::Delete, delete.build()));
    item
}

fn collection_operations(kind: &Kind) -> PathItem {
    let name = schema_name(kind);
    let body = RequestBodyBuilder::new()
        .content(
            "application/json",
            Content::new(Some(reference(&format!("{name}Input")))),
        )
        .required(Some(Required::True))
        .build();
    let post = with_common(
        OperationBuilder::new()
            .operation_id(Some(format!("create_{}", kind.singular)))
            .tag(kind.name)
            .request_body(Some(body))
            .response("201", json_response("created", reference(&name)))
            .response("409", problem("it already exists"))
            .response("413", problem("body too large")),
        true,
    );
    let mut item = PathItem::new(HttpMethod::Get, list_operation(kind).build());
    item.merge_operations(PathItem::new(HttpMethod::Post, post.build()));
    item
}

fn import_operation(kind: &Kind) -> PathItem {
    let body = RequestBodyBuilder::new()
        .description(Some(format!(
            "CSV with the header {} (extra columns become traits), or NDJSON with the same field names",
            kind.columns.iter().map(|c| c.name).collect::<Vec<_>>().join(",")
        )))
        .content("text/csv", Content::new(Some(typed(Type::String, false))))
        .content("application/x-ndjson", Content::new(Some(typed(Type::String, false))))
        .required(Some(Required::True))
        .build();
    let op = with_common(
        OperationBuilder::new()
            .operation_id(Some(format!("import_{}", kind.name)))
            .summary(Some("Import a file, all or nothing"))
            .tag("import")
            .parameter(query_param(
                "format",
                typed(Type::String, false)
                    .enum_values(Some(["csv", "ndjson"]))
                    .into(),
                "overrides Content-Type",
            ))
            .request_body(Some(body))
            .response("200", json_response("stored", reference("ImportReport")))
            .response("413", problem("body too large"))
            .response("422", problem("nothing stored; errors by row and column")),
        true,
    );
    PathItem::new(HttpMethod::Post, op.build())
}

/// One account's metrics: every export column (docs/metrics.md), null when undefined.
fn metrics_row_schema() -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("one account's metrics (the export's columns)"));
    use crate::metrics::Kind;
    for measure in crate::metrics::MEASURES {
        let column = measure.name;
        let schema: Schema = match (column, measure.kind) {
            ("usage_frequency", _) => typed(Type::String, false)
                .enum_values(Some(["daily", "weekly", "infrequent", "dormant"]))
                .into(),
            ("initial_adoption", _) => ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
                .property("active_users", typed(Type::Integer, false))
                .property("transactions", typed(Type::Integer, false))
                .into(),
            (_, Kind::Text) => typed(Type::String, false).into(),
            (_, Kind::Object) => free_object(column),
            (_, Kind::Count) => typed(Type::Integer, false).into(),
            (_, Kind::Days) => typed(Type::Integer, true).into(),
            (_, Kind::Ratio | Kind::Score | Kind::Hours | Kind::Number) => {
                typed(Type::Number, true).into()
            }
        };
        object = object.property(column, schema).required(column);
    }
    object.into()
}

fn date_param(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    query_param(
        name,
        typed(Type::String, false)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
            .into(),
        description,
    )
}

// Over 100 lines: Declarations: one entry per path and parameter.
#[allow(clippy::too_many_lines)]
fn metrics_paths(paths: &mut Paths) {
    let read = |id: &str, summary: &str| {
        OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(summary))
            .tag("metrics")
    };
    let all = with_common(
        read(
            "all_metrics",
            "Every account's metrics at a date (the rows of `bellwether metrics`)",
        )
        .parameter(date_param("as_of", "YYYY-MM-DD (default: today, UTC)"))
        .response(
            "200",
            json_response(
                "as_of, columns, accounts",
                free_object("metrics of every account").into(),
            ),
        ),
        false,
    );
    paths.paths.insert(
        "/api/v1/metrics".into(),
        PathItem::new(HttpMethod::Get, all.build()),
    );
    let account = with_common(
        read(
            "account_metrics",
            "One account's metrics; subtree=true counts the account and all below it as one",
        )
        .parameter(path_param("id"))
        .parameter(date_param("as_of", "YYYY-MM-DD (default: today, UTC)"))
        .parameter(query_param(
            "subtree",
            typed(Type::Boolean, false).into(),
            "include child accounts (default false)",
        ))
        .response(
            "200",
            json_response(
                "metrics",
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("as_of", typed(Type::String, false))
                    .property("subtree", typed(Type::Boolean, false))
                    .property("metrics", reference("AccountMetrics"))
                    .into(),
            ),
        )
        .response("404", problem("no such account")),
        false,
    );
    paths.paths.insert(
        "/api/v1/accounts/{id}/metrics".into(),
        PathItem::new(HttpMethod::Get, account.build()),
    );
    let numeric: Vec<&str> = crate::metrics::COLUMNS
        .iter()
        .copied()
        .filter(|c| crate::metrics::is_numeric(c))
        .collect();
    let series = with_common(
        read(
            "account_timeseries",
            "One numeric metric of an account for every day of a range",
        )
        .parameter(path_param("id"))
        .parameter(
            ParameterBuilder::new()
                .name("metric")
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .schema(Some(typed(Type::String, false).enum_values(Some(numeric))))
                .build(),
        )
        .parameter(date_param(
            "from",
            "first day (default: 89 days before `to`)",
        ))
        .parameter(date_param(
            "to",
            "last day (default: today, UTC); at most 1000 days",
        ))
        .response(
            "200",
            json_response(
                "account_id, metric, points [{date, value}]",
                free_object("a daily series").into(),
            ),
        )
        .response("404", problem("no such account")),
        false,
    );
    paths.paths.insert(
        "/api/v1/accounts/{id}/timeseries".into(),
        PathItem::new(HttpMethod::Get, series.build()),
    );
    let segments = with_common(
        read("segments", "Per segment (or plan) statistics of every metric: count, median, p25, p75, and sums where they add up")
            .parameter(date_param("as_of", "YYYY-MM-DD (default: today, UTC)"))
            .parameter(query_param("by", typed(Type::String, false).enum_values(Some(["segment", "plan"])).into(), "group by (default segment)"))
            .response("200", json_response("as_of, by, groups", free_object("statistics per group").into())),
        false,
    );
    paths.paths.insert(
        "/api/v1/segments".into(),
        PathItem::new(HttpMethod::Get, segments.build()),
    );
    let outcomes = with_common(
        read(
            "outcomes",
            "Renewals, expansion, contraction, churn, GRR, NRR and logo retention over [from, to)",
        )
        .parameter(date_param(
            "from",
            "first day (default: 12 months before `to`)",
        ))
        .parameter(date_param(
            "to",
            "the day after the period (default: the first of this month)",
        ))
        .parameter(query_param(
            "by",
            typed(Type::String, false)
                .enum_values(Some(["segment", "all"]))
                .into(),
            "per segment (default) or all accounts",
        ))
        .parameter(query_param(
            "interval",
            typed(Type::String, false)
                .enum_values(Some(["whole", "month", "quarter"]))
                .into(),
            "split the range (default whole)",
        ))
        .response(
            "200",
            json_response(
                "from, to, currency, periods",
                free_object("outcome rows").into(),
            ),
        ),
        false,
    );
    paths.paths.insert(
        "/api/v1/outcomes".into(),
        PathItem::new(HttpMethod::Get, outcomes.build()),
    );
}

// Over 100 lines: Declarations: one entry per path and parameter.
#[allow(clippy::too_many_lines)]
fn health_paths(paths: &mut Paths) {
    let read = |id: &str, summary: &str| {
        OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(summary))
            .tag("health")
    };
    let object = |description: &str| json_response(description, free_object(description).into());
    let add =
        |paths: &mut Paths, path: &str, method: HttpMethod, op: OperationBuilder, write: bool| {
            paths.paths.insert(
                path.into(),
                PathItem::new(method, with_common(op, write).build()),
            );
        };
    add(
        paths,
        "/api/v1/indicators",
        HttpMethod::Get,
        read(
            "indicators",
            "Feature ranking per segment (newest model, or a fresh analysis as of a date)",
        )
        .parameter(query_param(
            "segment",
            typed(Type::String, false).into(),
            "one segment",
        ))
        .parameter(date_param(
            "as_of",
            "analyse the renewals decided before this day",
        ))
        .response("200", object("model_id, as_of, notes, indicators"))
        .response("404", problem("no model yet, or no such segment")),
        false,
    );
    add(paths, "/api/v1/models", HttpMethod::Get, read("models", "Every stored health model, newest first: promoted or rejected, with its held-out test (gate)").response("200", object("models")), false);
    add(
        paths,
        "/api/v1/models/{id}",
        HttpMethod::Get,
        read("model", "One health model in full")
            .parameter(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(typed(Type::Integer, false)))
                    .build(),
            )
            .response("200", object("the model"))
            .response("404", problem("no such model")),
        false,
    );
    add(
        paths,
        "/api/v1/recalibrate",
        HttpMethod::Post,
        read("recalibrate", "Run the health analysis now and store a new model, promoted only if its held-out test is not worse than the model in force's (admin)")
            .response("200", object("model_id, as_of, decided_renewals, status, gate")),
        true,
    );
    add(
        paths,
        "/api/v1/health",
        HttpMethod::Get,
        read(
            "all_health",
            "Every account's tier, expected renewal rate, score and breakdown",
        )
        .parameter(date_param("as_of", "YYYY-MM-DD (default: today, UTC)"))
        .response("200", object("as_of, model_id, accounts"))
        .response("404", problem("no model yet")),
        false,
    );
    add(
        paths,
        "/api/v1/accounts/{id}/health",
        HttpMethod::Get,
        read(
            "account_health",
            "One account's tier, score, breakdown and the model that gave them",
        )
        .parameter(path_param("id"))
        .parameter(date_param("as_of", "YYYY-MM-DD (default: today, UTC)"))
        .response("200", object("as_of, health, model"))
        .response("404", problem("no such account, or no model yet")),
        false,
    );
    add(
        paths,
        "/api/v1/accounts/{id}/health/history",
        HttpMethod::Get,
        read(
            "account_health_history",
            "Stored daily score and tier of one account",
        )
        .parameter(path_param("id"))
        .parameter(date_param(
            "from",
            "first day (default: 89 days before `to`)",
        ))
        .parameter(date_param("to", "last day (default: today, UTC)"))
        .response("200", object("account_id, points")),
        false,
    );
    add(
        paths,
        "/api/v1/tier_changes",
        HttpMethod::Get,
        read(
            "tier_changes",
            "Changes of the held tier, each with its cause: usage or model",
        )
        .parameter(date_param("since", "first day (default: 30 days ago)"))
        .parameter(query_param(
            "account",
            typed(Type::String, false).into(),
            "one account",
        ))
        .response("200", object("since, tier_changes")),
        false,
    );
    add(
        paths,
        "/api/v1/backtest",
        HttpMethod::Get,
        read(
            "backtest",
            "Score with data before a date, compare with renewals decided in the horizon",
        )
        .parameter(date_param("as_of", "YYYY-MM-DD (default: 180 days ago)"))
        .parameter(query_param(
            "horizon_days",
            typed(Type::Integer, false)
                .minimum(Some(1))
                .maximum(Some(1098))
                .into(),
            "default 180",
        ))
        .response("200", object("per segment AUCs and calibration")),
        false,
    );
}

// Over 100 lines: Declarations: one entry per path and parameter.
#[allow(clippy::too_many_lines)]
fn actions_paths(paths: &mut Paths) {
    let op = |id: &str, summary: &str| {
        OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(summary))
            .tag("actions")
    };
    let object = |description: &str| json_response(description, free_object(description).into());
    let int_param = |name: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .schema(Some(typed(Type::Integer, false)))
            .build()
    };
    let json_body = |description: &str| {
        RequestBodyBuilder::new()
            .content(
                "application/json",
                Content::new(Some(RefOr::T(free_object(description)))),
            )
            .required(Some(Required::True))
            .build()
    };
    let list_rules = with_common(
        op(
            "list_rules",
            "The alert rules in force (config and API) and the measures rules may use",
        )
        .response("200", object("rules, measures")),
        false,
    );
    let create_rule = with_common(
        op("create_rule", "Add or replace an API rule (admin)")
            .request_body(Some(json_body(
                "name, when, segments, cooldown_days, notify, tasks, playbook, cause, enabled",
            )))
            .response("201", object("the rule"))
            .response("409", problem("a config rule has that name")),
        true,
    );
    let mut rules = PathItem::new(HttpMethod::Get, list_rules.build());
    rules.merge_operations(PathItem::new(HttpMethod::Post, create_rule.build()));
    paths.paths.insert("/api/v1/rules".into(), rules);
    let delete_rule = with_common(
        op("delete_rule", "Remove an API rule (admin)")
            .parameter(path_param("name"))
            .response("204", ResponseBuilder::new().description("removed").build())
            .response("404", problem("no such API rule")),
        true,
    );
    paths.paths.insert(
        "/api/v1/rules/{name}".into(),
        PathItem::new(HttpMethod::Delete, delete_rule.build()),
    );
    let alerts = with_common(
        op("list_alerts", "Alerts fired, newest first")
            .parameter(date_param("since", "first day (default: 30 days ago)"))
            .parameter(query_param(
                "account",
                typed(Type::String, false).into(),
                "one account",
            ))
            .parameter(query_param(
                "limit",
                typed(Type::Integer, false)
                    .minimum(Some(1))
                    .maximum(Some(10_000))
                    .into(),
                "most alerts (default 500)",
            ))
            .response("200", object("since, alerts")),
        false,
    );
    paths.paths.insert(
        "/api/v1/alerts".into(),
        PathItem::new(HttpMethod::Get, alerts.build()),
    );
    let evaluate = with_common(
        op(
            "evaluate_alerts",
            "Evaluate the rules now (admin); a dry run records and sends nothing",
        )
        .parameter(query_param(
            "rule",
            typed(Type::String, false).into(),
            "only this rule",
        ))
        .parameter(query_param(
            "dry_run",
            typed(Type::Boolean, false).into(),
            "default false",
        ))
        .response("200", object("dry_run, fired")),
        true,
    );
    paths.paths.insert(
        "/api/v1/alerts/evaluate".into(),
        PathItem::new(HttpMethod::Post, evaluate.build()),
    );
    let tasks = with_common(
        op("list_tasks", "CSM tasks, open first by due date; a rule's task has its cause and the reasons of later alerts merged into it (also)")
            .parameter(query_param(
                "status",
                typed(Type::String, false)
                    .enum_values(Some(["open", "snoozed", "done"]))
                    .into(),
                "one status",
            ))
            .parameter(query_param(
                "csm",
                typed(Type::String, false).into(),
                "one CSM's",
            ))
            .parameter(query_param(
                "account",
                typed(Type::String, false).into(),
                "one account's",
            ))
            .response("200", object("tasks")),
        false,
    );
    paths.paths.insert(
        "/api/v1/tasks".into(),
        PathItem::new(HttpMethod::Get, tasks.build()),
    );
    let update_task = with_common(
        op(
            "update_task",
            "Open, snooze (with snoozed_until) or finish a task; change its due day (admin)",
        )
        .parameter(int_param("id"))
        .request_body(Some(json_body("status, snoozed_until, due")))
        .response("200", object("the task"))
        .response("404", problem("no such task")),
        true,
    );
    paths.paths.insert(
        "/api/v1/tasks/{id}".into(),
        PathItem::new(HttpMethod::Patch, update_task.build()),
    );
    let create_task = with_common(
        op(
            "create_task",
            "Make a task by hand for the account's CSM: title (1-200 characters), due (YYYY-MM-DD, today or later; default a week from today) (admin)",
        )
        .parameter(path_param("id"))
        .request_body(Some(json_body("title, due")))
        .response("201", object("the task"))
        .response("404", problem("no such account")),
        true,
    );
    paths.paths.insert(
        "/api/v1/accounts/{id}/tasks".into(),
        PathItem::new(HttpMethod::Post, create_task.build()),
    );
    let start_playbook = with_common(
        op(
            "start_playbook",
            "Start a playbook on an account: each step becomes a task for its CSM, due its days from today (admin)",
        )
        .parameter(path_param("id"))
        .request_body(Some(json_body("playbook")))
        .response("201", object("account_id, playbook, tasks"))
        .response("404", problem("no such account")),
        true,
    );
    paths.paths.insert(
        "/api/v1/accounts/{id}/playbooks".into(),
        PathItem::new(HttpMethod::Post, start_playbook.build()),
    );
    let outbox = with_common(
        op(
            "list_outbox",
            "Notifications by status (default: the dead letters)",
        )
        .parameter(query_param(
            "status",
            typed(Type::String, false)
                .enum_values(Some(["pending", "sent", "dead"]))
                .into(),
            "default dead",
        ))
        .response("200", object("status, messages")),
        false,
    );
    paths.paths.insert(
        "/api/v1/outbox".into(),
        PathItem::new(HttpMethod::Get, outbox.build()),
    );
    let retry = with_common(
        op("retry_outbox", "Put a dead letter back in line (admin)")
            .parameter(int_param("id"))
            .response("200", object("id, status"))
            .response("404", problem("no dead message with that id")),
        true,
    );
    paths.paths.insert(
        "/api/v1/outbox/{id}/retry".into(),
        PathItem::new(HttpMethod::Post, retry.build()),
    );
}

fn listening_paths(paths: &mut Paths) {
    let op = |id: &str, summary: &str| {
        OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(summary))
            .tag("listening")
    };
    let json_or_csv = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(RefOr::T(free_object(description)))),
            )
            .content("text/csv", Content::new(Some(typed(Type::String, false))))
            .build()
    };
    let format = || {
        query_param(
            "format",
            typed(Type::String, false)
                .enum_values(Some(["json", "csv"]))
                .into(),
            "json (default) or csv",
        )
    };
    let comments = with_common(
        op("list_comments", "Every comment stream (survey comments, ticket subjects, suggestions, churn feedback, notes) with theme and sentiment")
            .parameter(query_param("account", typed(Type::String, false).into(), "one account"))
            .parameter(query_param("source", typed(Type::String, false).enum_values(Some(["survey", "ticket", "suggestion", "churn", "note"])).into(), "one stream"))
            .parameter(format())
            .response("200", json_or_csv("comments")),
        false,
    );
    paths.paths.insert(
        "/api/v1/comments".into(),
        PathItem::new(HttpMethod::Get, comments.build()),
    );
    let list_notes = with_common(
        op("list_notes", "An account's notes and logged activities (kind note, call, meeting or email), newest first")
            .parameter(path_param("id"))
            .response(
                "200",
                json_response("notes", free_object("account_id, notes").into()),
            ),
        false,
    );
    let add_note = with_common(
        op("add_note", "Add a note, or log a call, meeting or email, on an account: text, kind (note, call, meeting, email; default note), at (RFC 3339, not in the future; default now), person, author; it counts as contact (admin)")
            .parameter(path_param("id"))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        Content::new(Some(RefOr::T(free_object("text, kind, at, person, author")))),
                    )
                    .required(Some(Required::True))
                    .build(),
            ))
            .response(
                "201",
                json_response("the note's id", free_object("id, account_id").into()),
            )
            .response("404", problem("no such account")),
        true,
    );
    let mut notes = PathItem::new(HttpMethod::Get, list_notes.build());
    notes.merge_operations(PathItem::new(HttpMethod::Post, add_note.build()));
    paths
        .paths
        .insert("/api/v1/accounts/{id}/notes".into(), notes);
    let themes = with_common(
        op("list_themes", "Themes of the comments: count, accounts, their ARR, per quarter, churned vs retained share, sentiment, keywords, quotes")
            .parameter(query_param("among", typed(Type::String, false).enum_values(Some(["all", "detractors", "red"])).into(), "all (default), detractors (NPS 0-6) or red accounts"))
            .parameter(format())
            .response("200", json_or_csv("among, currency, themes")),
        false,
    );
    paths.paths.insert(
        "/api/v1/themes".into(),
        PathItem::new(HttpMethod::Get, themes.build()),
    );
    let reasons = with_common(
        op("churn_reasons", "Churn and downgrade reasons of terms ending in [from, to) by quarter, segment, reason and kind, in accounts and ARR lost")
            .parameter(date_param("from", "first day (default: 12 months before `to`)"))
            .parameter(date_param("to", "day after the last (default: tomorrow)"))
            .parameter(format())
            .response("200", json_or_csv("from, to, currency, reasons")),
        false,
    );
    paths.paths.insert(
        "/api/v1/reports/churn_reasons".into(),
        PathItem::new(HttpMethod::Get, reasons.build()),
    );
}

// Over 100 lines: The OpenAPI document's skeleton: a declaration, one entry per component.
#[allow(clippy::too_many_lines)]
fn build() -> utoipa::openapi::OpenApi {
    let mut paths = Paths::new();
    let mut components = ComponentsBuilder::new()
        .schema("Problem", problem_schema())
        .schema(
            "ImportReport",
            free_object("rows, inserted, updated, stored, error_count, errors"),
        )
        .schema("UserDeletion", free_object("counts of what was removed"))
        .schema("EventList", free_object("{\"events\": [...]}"))
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    for kind in records::KINDS {
        let name = schema_name(kind);
        components = components
            .schema(name.clone(), record_schema(kind))
            .schema(format!("{name}Input"), input_schema(kind))
            .schema(format!("{name}Page"), page_schema(kind));
        paths.paths.insert(
            format!("/api/v1/{}", kind.name),
            collection_operations(kind),
        );
        let key_path: Vec<String> = kind.key.iter().map(|k| format!("{{{k}}}")).collect();
        paths.paths.insert(
            format!("/api/v1/{}/{}", kind.name, key_path.join("/")),
            record_operations(kind, kind.key),
        );
        paths.paths.insert(
            format!("/api/v1/import/{}", kind.name),
            import_operation(kind),
        );
    }
    let activities = with_common(
        OperationBuilder::new()
            .operation_id(Some("import_activities"))
            .summary(Some("Import logged calls, meetings, emails and notes, all or nothing; repeats of logged ones are skipped"))
            .tag("import")
            .request_body(Some(
                RequestBodyBuilder::new()
                    .description(Some(format!(
                        "CSV with the header {} (the last two optional; at: YYYY-MM-DD or RFC 3339; kind: {})",
                        crate::import::activities::COLUMNS.join(","),
                        crate::listening::report::ACTIVITY_KINDS.join(", ")
                    )))
                    .content("text/csv", Content::new(Some(typed(Type::String, false))))
                    .required(Some(Required::True))
                    .build(),
            ))
            .response("200", json_response("stored (inserted: activities logged)", reference("ImportReport")))
            .response("413", problem("body too large"))
            .response("422", problem("nothing stored; errors by row and column")),
        true,
    );
    paths.paths.insert(
        "/api/v1/import/activities".into(),
        PathItem::new(HttpMethod::Post, activities.build()),
    );
    let delete_user = with_common(
        OperationBuilder::new()
            .operation_id(Some("delete_user"))
            .summary(Some(
                "GDPR erasure of a person's events, traits and survey answers",
            ))
            .tag("users")
            .parameter(path_param("id"))
            .response(
                "200",
                json_response("what was removed", reference("UserDeletion")),
            ),
        true,
    );
    paths.paths.insert(
        "/api/v1/users/{id}".into(),
        PathItem::new(HttpMethod::Delete, delete_user.build()),
    );
    let events = with_common(
        OperationBuilder::new()
            .operation_id(Some("list_events"))
            .summary(Some(
                "Stored events by receive time, for debugging an integration",
            ))
            .tag("events")
            .parameter(query_param(
                "since",
                typed(Type::String, false).into(),
                "YYYY-MM-DD or ISO-8601 (default: 24 h ago)",
            ))
            .parameter(query_param(
                "until",
                typed(Type::String, false).into(),
                "YYYY-MM-DD or ISO-8601",
            ))
            .parameter(query_param(
                "user",
                typed(Type::String, false).into(),
                "resolved user id",
            ))
            .parameter(query_param(
                "account",
                typed(Type::String, false).into(),
                "resolved account id",
            ))
            .parameter(query_param(
                "limit",
                typed(Type::Integer, false)
                    .minimum(Some(1))
                    .maximum(Some(limits::EVENTS_LIST_ROWS_MAX))
                    .into(),
                "most events (default 1000)",
            ))
            .parameter(query_param(
                "format",
                typed(Type::String, false)
                    .enum_values(Some(["json", "ndjson"]))
                    .into(),
                "json (default) or ndjson",
            ))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("events")
                    .content(
                        "application/json",
                        Content::new(Some(reference("EventList"))),
                    )
                    .content(
                        "application/x-ndjson",
                        Content::new(Some(typed(Type::String, false))),
                    )
                    .build(),
            ),
        false,
    );
    paths.paths.insert(
        "/api/v1/events".into(),
        PathItem::new(HttpMethod::Get, events.build()),
    );
    components = components.schema("AccountMetrics", metrics_row_schema());
    metrics_paths(&mut paths);
    health_paths(&mut paths);
    actions_paths(&mut paths);
    listening_paths(&mut paths);
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("bellwether API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Customer records, imports and events. Authenticate with `Authorization: Bearer <token>` (bellwether token create)."))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .security(Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]))
        .build()
}

//! `/demo/`: the live demo that `realtime dev` serves, and the dev-only endpoints it needs.
//!
//! The page (embedded: `index.html`, `app.js`, `app.css`) is plain JavaScript on top of the
//! TypeScript SDK, which it loads as ES modules from the built `sdk-ts/dist` folder
//! (`/demo/sdk/*.js`, read from disk so the page always runs the SDK of this clone). It shows
//! live todos (one live query: a snapshot, then the changes after it, filtered by row-level
//! security to the signed-in user's rows), the other visitors' cursors (broadcast) and who is
//! online (presence).
//!
//! The service itself has no sign-in and no way to write rows; a real app has its auth server
//! and its API (PostgREST, its own backend) for that. So that the demo runs with nothing else
//! installed, `realtime dev` answers two kinds of requests itself, on its throwaway database:
//!
//! - `POST /demo/api/session {name}`: signs a token for a demo user (role `authenticated`,
//!   `sub` a UUID derived from the name, so the same name is the same user in every tab);
//! - `POST /demo/api/todos {title}`, `PATCH /demo/api/todos/{id} {done}`,
//!   `DELETE /demo/api/todos/{id}`: run one statement as that token's role and claims, as
//!   PostgREST would, so the table's RLS policy decides whose rows may be written.
//!
//! Only `realtime dev` mounts these routes (`ServerConfig::demo`, which no setting of
//! `realtime serve` can turn on): anyone who reaches them gets a token.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use crate::config::{DatabaseConfig, DemoConfig, Secret};
use crate::node::Node;
use crate::telemetry::chain;

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The table of the demo, in the dev database (see [`setup_sql`]).
pub const TABLE: &str = "demo.todos";
/// The role of demo users' tokens: the one RLS policies are written for in Supabase.
const ROLE: &str = "authenticated";
/// How long a demo token lives; the SDK asks for a new one before it expires.
const TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
/// The longest demo user name and todo title (the table checks the title too).
const MAX_NAME: usize = 24;
const MAX_TITLE: usize = 200;

/// The SQL that gives a database the demo's table: `demo.todos`, whose rows belong to the user
/// in `user_id`, with an RLS policy showing and changing a user's own rows only, published in
/// `publication`. Idempotent; needs `auth.uid()` (the `realtime` migrations create it).
pub fn setup_sql(publication: &str) -> String {
    let literal = publication.replace('\'', "''");
    format!(
        "
CREATE SCHEMA IF NOT EXISTS demo;
CREATE TABLE IF NOT EXISTS demo.todos (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL DEFAULT auth.uid(),
  title text NOT NULL CHECK (length(title) BETWEEN 1 AND {MAX_TITLE}),
  done boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE demo.todos ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_rows ON demo.todos;
CREATE POLICY own_rows ON demo.todos
  USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
GRANT USAGE ON SCHEMA demo TO authenticated;
GRANT SELECT, INSERT (title), UPDATE (title, done), DELETE ON demo.todos TO authenticated;
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = '{literal}') THEN
    EXECUTE format('CREATE PUBLICATION %I FOR TABLE demo.todos', '{literal}');
  ELSIF NOT EXISTS (SELECT FROM pg_publication_tables
                    WHERE pubname = '{literal}' AND schemaname = 'demo' AND tablename = 'todos') THEN
    EXECUTE format('ALTER PUBLICATION %I ADD TABLE demo.todos', '{literal}');
  END IF;
END $$;
"
    )
}

#[derive(Clone)]
struct Demo {
    node: Arc<Node>,
    settings: DemoConfig,
    secret: Secret,
    /// Connects on first use: the page's reads go through the service, only writes need it.
    pool: PgPool,
}

/// The `/demo/` routes, or `None` outside `realtime dev` (then `/demo/` is a 404).
pub(crate) fn router(node: &Arc<Node>) -> Option<Router> {
    let settings = node.config.server.demo.clone()?;
    let (Some(secret), Some(database)) = (
        node.config.server.auth.jwt_secret.clone(),
        node.config.database.as_ref(),
    ) else {
        tracing::warn!(
            "the demo page needs a database and API_JWT_SECRET (it signs its users' tokens): /demo/ is off"
        );
        return None;
    };
    if !sdk_is_built(&settings.sdk_dir) {
        tracing::warn!(
            folder = %settings.sdk_dir.display(),
            "the demo page cannot load the SDK: it is not built (run `make dev`, or `npm ci && npm run build` in sdk-ts)"
        );
    }
    let demo = Demo {
        node: node.clone(),
        settings,
        secret,
        pool: pool(database),
    };
    Some(
        Router::new()
            .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
            .route("/demo/", get(page))
            .route("/demo/app.js", get(|| async { asset(SCRIPT, "text/javascript") }))
            .route("/demo/app.css", get(|| async { asset(STYLE, "text/css") }))
            .route("/demo/sdk/{file}", get(sdk_file))
            .route("/demo/api/session", post(session))
            .route("/demo/api/todos", post(add_todo))
            .route("/demo/api/todos/{id}", patch(set_done).delete(delete_todo))
            .with_state(demo),
    )
}

fn pool(database: &DatabaseConfig) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(crate::db::connect_options(database))
}

fn sdk_is_built(dir: &Path) -> bool {
    dir.join("index.js").is_file()
}

async fn page(State(demo): State<Demo>) -> Response {
    if !sdk_is_built(&demo.settings.sdk_dir) {
        let message = format!(
            "The demo needs the built SDK, and {} has no index.js.\n\
             Build it with `make dev`, or `npm ci && npm run build` in sdk-ts/, then reload.\n",
            demo.settings.sdk_dir.display()
        );
        return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    }
    asset(PAGE, "text/html; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// One module of the built SDK. Only plain file names: the folder is flat, and a name with a
/// path in it must not reach the disk.
async fn sdk_file(State(demo): State<Demo>, UrlPath(file): UrlPath<String>) -> Response {
    let plain = file.ends_with(".js")
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !file.starts_with('.');
    if !plain {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(demo.settings.sdk_dir.join(&file)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "text/javascript"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct SessionRequest {
    name: String,
}

/// Signs a token for the demo user `name`. The same name always gives the same user id, so a
/// name opened in two windows is one user on two devices.
async fn session(State(demo): State<Demo>, Json(request): Json<SessionRequest>) -> Response {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("a name has 1 to {MAX_NAME} characters"),
        );
    }
    let user_id = user_id(name);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = json!({
        "role": ROLE,
        "sub": user_id,
        "user_metadata": { "name": name },
        "iat": now,
        "exp": now + TOKEN_TTL.as_secs(),
        "iss": "realtime-dev",
    });
    let key = jsonwebtoken::EncodingKey::from_secret(demo.secret.expose().as_bytes());
    match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
        Ok(token) => Json(json!({
            "token": token,
            "expires_in": TOKEN_TTL.as_secs(),
            "user": { "id": user_id, "name": name },
        }))
        .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "could not sign a token"),
    }
}

/// A stable user id for a demo name (case-insensitive): a name-based (SHA-1) UUID.
fn user_id(name: &str) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(format!("realtime-demo:{}", name.to_lowercase()));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid().to_string()
}

#[derive(Deserialize)]
struct NewTodo {
    title: String,
}

#[derive(Deserialize)]
struct Done {
    done: bool,
}

async fn add_todo(State(demo): State<Demo>, headers: HeaderMap, Json(todo): Json<NewTodo>) -> Response {
    let title = todo.title.trim().to_owned();
    if title.is_empty() || title.chars().count() > MAX_TITLE {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("a title has 1 to {MAX_TITLE} characters"),
        );
    }
    let statement =
        sqlx::query_scalar::<_, i64>("INSERT INTO demo.todos (title) VALUES ($1) RETURNING id").bind(title);
    write_as_user(&demo, &headers, |tx| {
        Box::pin(async move {
            let id = statement.fetch_one(&mut **tx).await?;
            Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
        })
    })
    .await
}

async fn set_done(
    State(demo): State<Demo>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<i64>,
    Json(done): Json<Done>,
) -> Response {
    let statement = sqlx::query("UPDATE demo.todos SET done = $2 WHERE id = $1")
        .bind(id)
        .bind(done.done);
    write_as_user(&demo, &headers, |tx| {
        Box::pin(async move { Ok(found(statement.execute(&mut **tx).await?.rows_affected())) })
    })
    .await
}

async fn delete_todo(State(demo): State<Demo>, headers: HeaderMap, UrlPath(id): UrlPath<i64>) -> Response {
    let statement = sqlx::query("DELETE FROM demo.todos WHERE id = $1").bind(id);
    write_as_user(&demo, &headers, |tx| {
        Box::pin(async move { Ok(found(statement.execute(&mut **tx).await?.rows_affected())) })
    })
    .await
}

/// 204, or 404 when RLS hid the row (another user's) or it does not exist.
fn found(rows: u64) -> Response {
    if rows == 0 {
        error(StatusCode::NOT_FOUND, "no such todo of yours")
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;
type Written<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, sqlx::Error>> + Send + 'a>>;

/// Runs `write` in a transaction as the bearer token's role and claims (`SET LOCAL role`,
/// `request.jwt.claims`), as PostgREST does: the table's grants and RLS policy decide, not
/// this code. Only demo users' tokens (`authenticated`) are taken, never a key that bypasses
/// RLS.
async fn write_as_user<F>(demo: &Demo, headers: &HeaderMap, write: F) -> Response
where
    F: for<'a> FnOnce(&'a mut Tx) -> Written<'a>,
{
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return error(
            StatusCode::UNAUTHORIZED,
            "sign in first (Authorization: Bearer <token>)",
        );
    };
    let claims = match demo.node.verifier.verify(token).await {
        Ok(claims) => claims,
        Err(refused) => return error(StatusCode::UNAUTHORIZED, &refused.to_string()),
    };
    if claims.role != ROLE {
        return error(StatusCode::FORBIDDEN, "only demo users' tokens may write here");
    }
    let result = async {
        let mut tx = demo.pool.begin().await?;
        sqlx::query("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)")
            .bind(&claims.role)
            .bind(serde_json::Value::Object(claims.all.clone()).to_string())
            .execute(&mut *tx)
            .await?;
        let response = write(&mut tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(response)
    }
    .await;
    match result {
        Ok(response) => response,
        // A check constraint or the policy: the request was wrong, not the server.
        Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("23") || c == "42501") => {
            error(StatusCode::FORBIDDEN, "the database refused the change")
        }
        Err(e) => {
            tracing::warn!(error = %chain(&e), "demo write failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable")
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_one_user_whatever_its_case() {
        assert_eq!(user_id("Alice"), user_id("alice"));
        assert_ne!(user_id("alice"), user_id("bob"));
        let id = uuid::Uuid::parse_str(&user_id("alice")).unwrap();
        assert_eq!(id.get_version_num(), 5);
    }
}

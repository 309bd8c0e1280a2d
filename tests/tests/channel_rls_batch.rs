//! The RLS checks of many concurrent private joins are batched into one statement (see
//! `realtime/src/authorization/batch.rs`); each check must still be decided under its own role,
//! claims and topic. Hundreds of checks are asked at once, so they share batches, with
//! alternating users (members or not, senders or not), roles, topics, presence settings and a
//! policy that raises for one user: every check gets exactly the answer it would get alone.

use futures::future::join_all;
use realtime::auth::Claims;
use realtime::authorization::{CheckError, Rls};
use realtime::policy::ChannelAccess;
use realtime_tests::{database, exec, pool, start_postgres};
use serde_json::json;

const CHECKS: u64 = 300;
/// The user whose check raises (a policy divides by zero for it).
const FAULTY: u64 = 77;

fn user(i: u64) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

/// Check `i`'s claims: every fifth is `anon` (no policy lets it in), the others `authenticated`.
/// `exp` tells tokens of one user apart.
fn claims(i: u64, exp: i64) -> Claims {
    let role = if i % 5 == 4 { "anon" } else { "authenticated" };
    let all = json!({ "role": role, "sub": user(i), "exp": exp });
    Claims {
        role: role.to_owned(),
        exp,
        sub: Some(user(i)),
        all: all.as_object().expect("an object").clone(),
    }
}

/// Even users are members of `room:a` (every fourth may also send); checks alternate between
/// `room:a` and `room:b`, where nobody is a member.
fn topic(i: u64) -> &'static str {
    if i.is_multiple_of(3) { "room:b" } else { "room:a" }
}

fn expected(i: u64) -> Result<ChannelAccess, CheckError> {
    if i == FAULTY {
        return Err(CheckError::PolicyError(topic(i).to_owned()));
    }
    let member = i.is_multiple_of(2) && i % 5 != 4 && topic(i) == "room:a";
    let presence = i % 7 < 3;
    Ok(ChannelAccess {
        broadcast_read: member,
        presence_read: member && presence,
        broadcast_write: member && i.is_multiple_of(4),
        presence_write: member && i.is_multiple_of(4),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_each_get_their_own_answer() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let pg = start_postgres(realtime::embedded::Options::default());
    let db = pool(&pg).await;
    realtime::db::migrate(&db).await.expect("migrations");
    exec(&db, super::channel_rls::ROOM_POLICIES).await;
    exec(
        &db,
        "create policy \"faulty\" on realtime.messages for select to authenticated
         using (case when (select auth.uid()) = '00000000-0000-0000-0000-000000000077'
                     then 1 / (select 0) = 1 else false end);",
    )
    .await;
    for i in (0..CHECKS).step_by(2) {
        sqlx::query("insert into public.room_members values ($1::uuid, 'room:a', $2)")
            .bind(user(i))
            .bind(i % 4 == 0)
            .execute(&db)
            .await
            .expect("a member");
    }

    // No partition exists yet for today (only the migrations ran): the first batch meets its
    // absence, creates it and asks again.
    let rls = Rls::new(&database(&pg));
    let tokens: Vec<Claims> = (0..CHECKS).map(|i| claims(i, 4_000_000_000)).collect();
    let answers = join_all((0..CHECKS).map(|i| rls.access(topic(i), &tokens[i as usize], i % 7 < 3))).await;
    for (i, answer) in (0..CHECKS).zip(answers) {
        assert_eq!(answer, expected(i), "check {i}");
    }
    // New tokens (not cached), asked in reverse order: other neighbours in the batches, the
    // same answers.
    let tokens: Vec<Claims> = (0..CHECKS).map(|i| claims(i, 4_000_000_001)).collect();
    let answers = join_all(
        (0..CHECKS)
            .rev()
            .map(|i| rls.access(topic(i), &tokens[i as usize], i % 7 < 3)),
    )
    .await;
    for (i, answer) in (0..CHECKS).rev().zip(answers) {
        assert_eq!(answer, expected(i), "check {i}, asked again");
    }

    // Every probe was rolled back.
    let left: i64 = sqlx::query_scalar("select count(*) from realtime.messages")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

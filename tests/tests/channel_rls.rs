//! Private channels authorized by Postgres row-level security on `realtime.messages`
//! (`CHANNEL_AUTHORIZATION=database`), with Supabase's documented room-membership policies: the
//! read check at join, the write check for broadcasts (WebSocket and REST), re-checks on a new
//! token, probes that never stay in the table, and `PRIVATE_ONLY`.

use std::time::Duration;

use realtime_tests::auth::{SECRET, sign, unix_now};
use realtime_tests::free_port;
use realtime_tests::phoenix::{Client, socket_url};
use realtime_tests::server::http;
use realtime_tests::{Process, exec, pool, start_postgres};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);
const ALICE: &str = "11111111-1111-1111-1111-111111111111";
const BOB: &str = "22222222-2222-2222-2222-222222222222";
const CAROL: &str = "33333333-3333-3333-3333-333333333333";

/// Supabase's Authorization guide: members of a room may receive and send on its topic (the
/// members themselves are each test's own rows).
pub(crate) const ROOM_POLICIES: &str = "
    create table public.room_members (user_id uuid not null, room text not null, can_send boolean not null);
    grant select on public.room_members to authenticated;
    create policy \"members can receive\" on realtime.messages for select to authenticated
    using (
      realtime.messages.extension in ('broadcast', 'presence')
      and exists (select 1 from public.room_members m
                  where m.user_id = (select auth.uid()) and m.room = (select realtime.topic()))
    );
    create policy \"senders can send\" on realtime.messages for insert to authenticated
    with check (
      realtime.messages.extension in ('broadcast', 'presence')
      and exists (select 1 from public.room_members m
                  where m.user_id = (select auth.uid()) and m.room = (select realtime.topic())
                    and m.can_send)
    );
";

fn token(sub: &str) -> String {
    sign(&json!({ "role": "authenticated", "sub": sub, "exp": unix_now() + 3600 }))
}

/// A vsn 1.0.0 client with `token`.
async fn open(port: u16, token: &str) -> Client {
    let mut client = Client::connect(&socket_url(port, token, "1.0.0"), "1.0.0").await;
    client.patience = PATIENCE;
    client
}

/// Joins `realtime:<topic>`; returns the join ref and the reply payload.
async fn join(client: &mut Client, topic: &str, private: bool, token: &str) -> (String, Value) {
    let payload = json!({"config": {"broadcast": {"self": false, "ack": true}, "presence": {"enabled": false},
                                    "postgres_changes": [], "private": private},
                         "access_token": token});
    let join_ref = client.join_raw(&format!("realtime:{topic}"), payload).await;
    let reply = client.reply_to(&join_ref).await;
    (join_ref, reply)
}

async fn broadcast(client: &mut Client, join_ref: &str, topic: &str, n: i64) {
    let payload = json!({"type": "broadcast", "event": "e", "payload": {"n": n}});
    client
        .send(Some(join_ref), &format!("realtime:{topic}"), "broadcast", payload)
        .await;
}

/// `POST` on loopback; returns the status code.
async fn post(port: u16, path: &str, token: &str, content_type: Option<&str>, body: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    headers.extend(content_type.map(|c| ("Content-Type", c)));
    http(("127.0.0.1", port), "POST", path, &headers, body.as_bytes())
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_membership_policies_decide_who_joins_and_who_sends() {
    let pg = start_postgres(realtime::embedded::Options::default());
    let db = pool(&pg).await;
    let port = free_port();
    let env = vec![
        ("DATABASE_URL", pg.url("postgres")),
        ("PORT", port.to_string()),
        ("API_JWT_SECRET", SECRET.to_owned()),
        ("CHANNEL_ERROR_BACKOFF_MS", "0".to_owned()),
        ("CONNECT_ERROR_BACKOFF_MS", "0".to_owned()),
        ("CHANNEL_AUTHORIZATION", "database".to_owned()),
        ("PRIVATE_ONLY", "true".to_owned()),
    ];
    let service = Process::spawn(&["serve"], &env);
    service.wait_stderr("streaming changes", Duration::from_secs(60));
    service.wait_stderr("listening", Duration::from_secs(10));
    // The migrations created realtime.messages and auth.uid(): Supabase's policies apply as is.
    exec(&db, ROOM_POLICIES).await;
    exec(
        &db,
        "insert into public.room_members values
           ('11111111-1111-1111-1111-111111111111', 'room:a', true),
           ('33333333-3333-3333-3333-333333333333', 'room:a', false);",
    )
    .await;

    let (alice, bob, carol) = (token(ALICE), token(BOB), token(CAROL));
    let mut a = open(port, &alice).await;
    let (a_ref, reply) = join(&mut a, "room:a", true, &alice).await;
    assert_eq!(reply["status"], "ok");
    let mut c = open(port, &carol).await;
    let (c_ref, reply) = join(&mut c, "room:a", true, &carol).await;
    assert_eq!(reply["status"], "ok");

    let mut b = open(port, &bob).await;
    let (_, refused) = join(&mut b, "room:a", true, &bob).await;
    assert_eq!(refused["status"], "error");
    assert_eq!(
        refused["response"]["reason"],
        "Unauthorized: You do not have permissions to read from this Channel topic: room:a"
    );
    // PRIVATE_ONLY: public joins are refused with Supabase's reason.
    let (_, public) = join(&mut b, "room:a", false, &bob).await;
    assert_eq!(
        public["response"]["reason"],
        "PrivateOnly: This project only allows private channels"
    );

    // Alice may send: Carol receives it. Carol may only read: her message is dropped.
    broadcast(&mut a, &a_ref, "room:a", 1).await;
    let got = c.recv_event("broadcast").await;
    assert_eq!(got.payload()["payload"]["n"], 1);
    broadcast(&mut c, &c_ref, "room:a", 2).await;
    broadcast(&mut a, &a_ref, "room:a", 3).await;
    let next = c.recv_event("broadcast").await;
    assert_eq!(next.payload()["payload"]["n"], 3);
    assert!(
        a.recv_where(Duration::from_millis(500), |f| f.event() == "broadcast"
            && f.payload()["payload"]["n"] == 2)
            .await
            .is_none(),
        "a reader's broadcast was dropped"
    );

    // REST: a private topic without write permission is refused with 403; a member with write
    // gets 202, also without a Content-Type.
    let path = "/api/broadcast/room%3Aa/events/e?private=true";
    assert_eq!(
        post(port, path, &carol, Some("application/json"), "{\"n\":4}").await,
        403
    );
    assert_eq!(post(port, path, &alice, None, "{\"n\":5}").await, 202);
    let rest = c.recv_event("broadcast").await;
    assert_eq!(rest.payload()["payload"]["n"], 5);

    // Membership revoked, then a new token: the read is checked again and the channel closes.
    exec(
        &db,
        &format!("delete from public.room_members where user_id = '{CAROL}'"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // past the shared check cache
    let fresh = sign(&json!({ "role": "authenticated", "sub": CAROL, "exp": unix_now() + 7200 }));
    let refresh = json!({"access_token": fresh});
    c.send(Some(&c_ref), "realtime:room:a", "access_token", refresh)
        .await;
    let system = c.recv_event("system").await;
    assert_eq!(
        system.payload()["message"],
        "You no longer have permission to read from this Channel topic: room:a"
    );

    // Every probe was rolled back: nothing of the checks stays in the table.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM realtime.messages")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

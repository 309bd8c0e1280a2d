//! Private channels authorized by Postgres row-level security on `realtime.messages`
//! (`CHANNEL_AUTHORIZATION=database`), with Supabase's documented room-membership policies: the
//! read check at join, the write check for broadcasts (WebSocket and REST), re-checks on a new
//! token, probes that never stay in the table, and `PRIVATE_ONLY`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use realtime_tests::service::{SECRET, free_port};
use realtime_tests::{Process, exec, pool, start_postgres};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

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
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "role": "authenticated", "sub": sub, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("a token")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A vsn 1.0.0 socket.
struct Socket {
    ws: Ws,
}

impl Socket {
    async fn open(port: u16, token: &str) -> Socket {
        let url = format!("ws://127.0.0.1:{port}/socket/websocket?apikey={token}&vsn=1.0.0");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        Socket { ws }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    /// Joins `realtime:<topic>` and returns the reply payload.
    async fn join(&mut self, topic: &str, private: bool, token: &str) -> Value {
        self.send(json!({
            "topic": format!("realtime:{topic}"), "event": "phx_join", "ref": "j", "join_ref": "j",
            "payload": {"config": {"broadcast": {"self": false, "ack": true}, "presence": {"enabled": false},
                                   "postgres_changes": [], "private": private},
                        "access_token": token}
        }))
        .await;
        self.until(|v| v["event"] == "phx_reply" && v["ref"] == "j").await["payload"].clone()
    }

    async fn broadcast(&mut self, topic: &str, r: &str, n: i64) {
        self.send(json!({
            "topic": format!("realtime:{topic}"), "event": "broadcast", "ref": r, "join_ref": "j",
            "payload": {"type": "broadcast", "event": "e", "payload": {"n": n}}
        }))
        .await;
    }

    async fn until(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        self.within(PATIENCE, want).await.expect("the expected frame")
    }

    async fn within(&mut self, wait: Duration, want: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                if want(&v) {
                    return Some(v);
                }
            }
        }
    }
}

/// `POST` on loopback; returns the status code.
async fn post(port: u16, path: &str, token: &str, content_type: Option<&str>, body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code")
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
    let mut a = Socket::open(port, &alice).await;
    assert_eq!(a.join("room:a", true, &alice).await["status"], "ok");
    let mut c = Socket::open(port, &carol).await;
    assert_eq!(c.join("room:a", true, &carol).await["status"], "ok");

    let mut b = Socket::open(port, &bob).await;
    let refused = b.join("room:a", true, &bob).await;
    assert_eq!(refused["status"], "error");
    assert_eq!(
        refused["response"]["reason"],
        "Unauthorized: You do not have permissions to read from this Channel topic: room:a"
    );
    // PRIVATE_ONLY: public joins are refused with Supabase's reason.
    let public = b.join("room:a", false, &bob).await;
    assert_eq!(
        public["response"]["reason"],
        "PrivateOnly: This project only allows private channels"
    );

    // Alice may send: Carol receives it. Carol may only read: her message is dropped.
    a.broadcast("room:a", "a1", 1).await;
    let got = c.until(|v| v["event"] == "broadcast").await;
    assert_eq!(got["payload"]["payload"]["n"], 1);
    c.broadcast("room:a", "c1", 2).await;
    a.broadcast("room:a", "a2", 3).await;
    let next = c
        .until(|v| v["event"] == "broadcast" || v["event"] == "never")
        .await;
    assert_eq!(next["payload"]["payload"]["n"], 3);
    assert!(
        a.within(Duration::from_millis(500), |v| v["event"] == "broadcast"
            && v["payload"]["payload"]["n"] == 2)
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
    let rest = c.until(|v| v["event"] == "broadcast").await;
    assert_eq!(rest["payload"]["payload"]["n"], 5);

    // Membership revoked, then a new token: the read is checked again and the channel closes.
    exec(
        &db,
        &format!("delete from public.room_members where user_id = '{CAROL}'"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // past the shared check cache
    let fresh = {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 7200;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({ "role": "authenticated", "sub": CAROL, "exp": exp }),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("a token")
    };
    c.send(
        json!({"topic": "realtime:room:a", "event": "access_token", "ref": "t", "join_ref": "j",
                  "payload": {"access_token": fresh}}),
    )
    .await;
    let system = c.until(|v| v["event"] == "system").await;
    assert_eq!(
        system["payload"]["message"],
        "You no longer have permission to read from this Channel topic: room:a"
    );

    // Every probe was rolled back: nothing of the checks stays in the table.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM realtime.messages")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

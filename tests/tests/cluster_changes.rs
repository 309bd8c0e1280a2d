//! One change stream for a cluster of nodes: three `realtime serve` processes on one Postgres
//! and one `nats-server`, each reaching both through its own TCP proxy so the test can cut or
//! pause any node's links. Exactly one node streams the slot; every node serves live changes
//! and resumes; `kill -9` of the leader loses nothing for clients that come back, on any node,
//! with their position.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use realtime::embedded::EmbeddedPostgres;
use realtime_tests::auth::token;
use realtime_tests::nats::NatsServer;
use realtime_tests::phoenix::socket_url;
use realtime_tests::proxy::TcpProxy;
use realtime_tests::server::http;
use realtime_tests::service::{Service, Subscriber, http_get, metric};
use realtime_tests::{exec, items_database, write_items};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SLOT: &str = "cluster_slot";
const PUBLICATION: &str = "supabase_realtime";
/// Longest wait for anything in these tests.
const PATIENCE: Duration = Duration::from_secs(45);
/// How long a leader cut off from NATS keeps leading (short for the test).
const GRACE_MS: u64 = 3_000;

/// Postgres with `items` published, and a NATS server.
async fn setup() -> (EmbeddedPostgres, sqlx::PgPool, NatsServer) {
    let (pg, db) = items_database().await;
    (pg, db, NatsServer::start())
}

/// One node and the proxies of its links.
struct Node {
    id: String,
    service: Option<Service>,
    postgres: TcpProxy,
    nats: TcpProxy,
    extra: Vec<(String, String)>,
}

impl Node {
    /// Starts node `id` (its proxies first) and waits until it listens.
    async fn start(pg: &EmbeddedPostgres, nats: &NatsServer, id: &str) -> Node {
        Node::start_with(pg, nats, id, &[]).await
    }

    /// [`Node::start`] with extra environment (`CLUSTER_CDC=never`, ...).
    async fn start_with(pg: &EmbeddedPostgres, nats: &NatsServer, id: &str, extra: &[(&str, &str)]) -> Node {
        let (postgres, nats) = (TcpProxy::start(pg.port()).await, TcpProxy::start(nats.port).await);
        let mut node = Node {
            id: id.to_owned(),
            service: None,
            postgres,
            nats,
            extra: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        node.launch();
        node
    }

    fn launch(&mut self) {
        let url = format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            realtime::embedded::SUPERUSER_PASSWORD,
            self.postgres.port
        );
        let mut extra = vec![
            ("NATS_URL", format!("nats://127.0.0.1:{}", self.nats.port)),
            ("NODE_ID", self.id.clone()),
            ("CLUSTER_HEARTBEAT_MS", "300".to_owned()),
            ("CLUSTER_LEADER_BUS_GRACE_MS", GRACE_MS.to_string()),
        ];
        extra.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
        self.service = Some(Service::start_node(&url, SLOT, PUBLICATION, &extra));
    }

    fn service(&self) -> &Service {
        self.service.as_ref().expect("a running node")
    }

    fn port(&self) -> u16 {
        self.service().port
    }

    fn kill(&mut self) {
        if let Some(mut service) = self.service.take() {
            service.process.kill();
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        metric(&http_get(self.port(), "/metrics").await, name)
    }

    async fn is_leader(&self) -> bool {
        self.service.is_some() && self.metric("realtime_cluster_leader").await == 1.0
    }

    async fn ready(&self) -> bool {
        http(("127.0.0.1", self.port()), "GET", "/readyz", &[], b"")
            .await
            .0
            == 200
    }
}

async fn start_nodes(pg: &EmbeddedPostgres, nats: &NatsServer, count: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..count {
        nodes.push(Node::start(pg, nats, &format!("node-{i}")).await);
    }
    nodes
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The index of the one leader, once exactly one node leads and every running node is ready.
async fn settled(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut leaders = Vec::new();
        let mut ready = true;
        for (i, node) in nodes.iter().enumerate() {
            if node.service.is_none() {
                continue;
            }
            if node.is_leader().await {
                leaders.push(i);
            }
            ready &= node.ready().await;
        }
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if ready && let Some(leader) = leaders.first() {
            return *leader;
        }
        if Instant::now() > deadline {
            for node in nodes.iter().filter(|n| n.service.is_some()) {
                let log = node.service().process.stderr();
                let tail = &log[log.len().saturating_sub(3000)..];
                println!("--- {} (ready {}):\n{tail}", node.id, node.ready().await);
            }
            panic!("no single leader with every node ready in time (leaders {leaders:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn insert(db: &sqlx::PgPool, rows: usize) {
    exec(
        db,
        &format!("INSERT INTO items (grp) SELECT g % 2 FROM generate_series(1, {rows}) g"),
    )
    .await;
}

fn all_items() -> Value {
    json!([{ "event": "INSERT", "schema": "public", "table": "items" }])
}

/// Reads `n` changes; returns their ids and positions.
async fn read_changes(subscriber: &mut Subscriber, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        match subscriber.next_push(PATIENCE).await {
            Some((event, payload)) if event == "postgres_changes" => out.push((
                payload["data"]["record"]["id"].as_i64().unwrap_or(-1),
                payload["position"].as_str().unwrap_or_default().to_owned(),
            )),
            Some((_, payload)) => panic!("expected a change, got {payload}"),
            None => panic!("only {} of {n} changes arrived", out.len()),
        }
    }
    out
}

fn ids(from: i64, to: i64) -> Vec<i64> {
    (from..=to).collect()
}

/// Reads changes 1..=`n` (ids of the rows inserted so far, in order) and then nothing more.
async fn expect_exactly(subscriber: &mut Subscriber, n: i64, who: &str) {
    let got = read_changes(subscriber, n as usize).await;
    assert_eq!(got.iter().map(|c| c.0).collect::<Vec<_>>(), ids(1, n), "{who}");
    let extra = subscriber.next(Duration::from_millis(300)).await;
    assert!(extra.is_none(), "{who} sent more: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_node_leads_over_repeated_simultaneous_starts() {
    const ROUNDS: usize = 8;
    let (pg, db, nats) = setup().await;
    let mut first_epoch = None;
    for round in 0..ROUNDS {
        let mut nodes = start_nodes(&pg, &nats, 3).await;
        let leader = settled(&nodes).await;
        // Postgres agrees: the slot's walsender is the backend holding the lock, and the other
        // two nodes' backends wait for it.
        let active: Option<i32> =
            sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
                .bind(SLOT)
                .fetch_one(&db)
                .await
                .expect("the slot");
        let locks: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' \
             AND pid IN (SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender') ORDER BY granted DESC",
        )
        .fetch_all(&db)
        .await
        .expect("advisory locks");
        let granted: Vec<i32> = locks.iter().filter(|l| l.1).map(|l| l.0).collect();
        let waiting = locks.iter().filter(|l| !l.1).count();
        assert_eq!(granted, [active.expect("an active slot")], "round {round}");
        assert_eq!(waiting, 2, "round {round}: {locks:?}");
        for (i, node) in nodes.iter().enumerate() {
            assert_eq!(node.is_leader().await, i == leader, "round {round}");
        }
        let epoch: i64 =
            sqlx::query_scalar("SELECT epoch FROM realtime.replication_epochs WHERE slot_name = $1")
                .bind(SLOT)
                .fetch_one(&db)
                .await
                .expect("the epoch");
        assert_eq!(
            *first_epoch.get_or_insert(epoch),
            epoch,
            "round {round}: no leader begins an epoch of its own"
        );
        println!("round {round}: {} leads", nodes[leader].id);
        for node in &mut nodes {
            node.kill();
        }
        // The killed backends go with their sockets; the next round starts from a free slot.
        wait_until("the slot to be released", || async {
            let active: Option<i32> =
                sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
                    .bind(SLOT)
                    .fetch_one(&db)
                    .await
                    .expect("the slot");
            active.is_none()
        })
        .await;
    }
    let term: i64 = sqlx::query_scalar("SELECT term FROM realtime.cdc_leadership WHERE slot_name = $1")
        .bind(SLOT)
        .fetch_one(&db)
        .await
        .expect("the term");
    assert!(term >= ROUNDS as i64, "a term per leadership: {term}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscribers_on_every_node_get_every_change_whichever_node_leads() {
    let (pg, db, nats) = setup().await;
    // Two nodes contend; the third never leads (`CLUSTER_CDC=never`) and follows throughout.
    let mut nodes = start_nodes(&pg, &nats, 2).await;
    nodes.push(Node::start_with(&pg, &nats, "node-never", &[("CLUSTER_CDC", "never")]).await);
    let first = settled(&nodes).await;
    assert!(first < 2, "a CLUSTER_CDC=never node never leads");
    let mut subscribers = Vec::new();
    for node in &nodes {
        subscribers
            .push(Subscriber::join(node.service(), &token("service_role"), "live", all_items(), None).await);
    }
    insert(&db, 100).await;
    let mut epoch = None;
    for subscriber in &mut subscribers {
        let got = read_changes(subscriber, 100).await;
        assert_eq!(got.iter().map(|c| c.0).collect::<Vec<_>>(), ids(1, 100));
        epoch.get_or_insert_with(|| got[0].1[..16].to_owned());
    }
    // Followers measure the bus: from the leader publishing a frame to handing it on here.
    for (i, node) in nodes.iter().enumerate() {
        let text = http_get(node.port(), "/metrics").await;
        let frames = metric(&text, "realtime_cluster_bus_lag_seconds_count");
        let seconds = metric(&text, "realtime_cluster_bus_lag_seconds_sum");
        println!("{}: bus lag over {frames} frames, {seconds:.4} s in all", node.id);
        if i == first {
            assert_eq!(frames, 0.0, "the leader applies nothing from the bus");
        } else {
            assert!(frames >= 1.0, "{}: no bus lag observed", node.id);
            assert!(seconds < frames * 5.0, "{}: implausible lag {seconds} s", node.id);
        }
    }

    // A follower that hears nothing from NATS takes over from a killed leader: what its
    // replication re-reads beyond its own head is news to its live subscribers.
    let next = 1 - first;
    let other = 2;
    // Its NATS link stalls (the connection stays up): it misses what the leader publishes.
    nodes[next].nats.pause();
    insert(&db, 50).await;
    let on_other = read_changes(&mut subscribers[other], 50).await;
    assert_eq!(on_other.iter().map(|c| c.0).collect::<Vec<_>>(), ids(101, 150));
    nodes[first].kill();
    let started = Instant::now();
    let took_over = read_changes(&mut subscribers[next], 50).await;
    println!(
        "the node that took over delivered the 50 changes it had missed {:?} after the kill",
        started.elapsed()
    );
    assert_eq!(took_over.iter().map(|c| c.0).collect::<Vec<_>>(), ids(101, 150));
    nodes[next].nats.resume();
    assert!(nodes[next].is_leader().await, "the node that took over leads");

    insert(&db, 20).await;
    for i in [next, other] {
        let got = read_changes(&mut subscribers[i], 20).await;
        assert_eq!(
            got.iter().map(|c| c.0).collect::<Vec<_>>(),
            ids(151, 170),
            "node {i}"
        );
        // The same history: the new leader did not begin an epoch of its own.
        assert_eq!(Some(&got[0].1[..16]), epoch.as_deref(), "node {i}");
    }
    // Nothing twice.
    for i in [next, other] {
        let extra = subscribers[i].next(Duration::from_millis(500)).await;
        assert!(extra.is_none(), "node {i} sent more: {extra:?}");
    }
}

/// What a resuming client saw.
#[derive(Debug, Default)]
struct Seen {
    /// (id, position, when received)
    changes: Vec<(i64, String, Instant)>,
    refetches: Vec<Value>,
    joins: usize,
    subscribed: usize,
}

/// `count` resuming clients spread round robin over `nodes`, returned once each has
/// subscribed: the node ports they follow (a restarted node's new port goes there), what each
/// has seen, and the token that stops them.
async fn resuming_clients(
    nodes: &[Node],
    count: usize,
) -> (Arc<Mutex<Vec<u16>>>, Vec<Arc<Mutex<Seen>>>, CancellationToken) {
    let ports = Arc::new(Mutex::new(nodes.iter().map(Node::port).collect::<Vec<u16>>()));
    let stop = CancellationToken::new();
    let clients: Vec<Arc<Mutex<Seen>>> = (0..count)
        .map(|_| Arc::new(Mutex::new(Seen::default())))
        .collect();
    for (i, seen) in clients.iter().enumerate() {
        resuming_client(ports.clone(), i % nodes.len(), seen.clone(), stop.clone());
    }
    wait_until("every client to subscribe", || async {
        clients.iter().all(|c| c.lock().expect("lock").subscribed == 1)
    })
    .await;
    (ports, clients, stop)
}

/// A client that joins node `ports[start]`, records every change, and on losing its socket
/// joins the next node (round robin) with `since` = the last position it processed.
///
/// Raw WebSocket frames rather than [`realtime_tests::phoenix::Client`]: it keeps trying while
/// a node is down, where the shared client panics on a refused connection or a close.
fn resuming_client(
    ports: Arc<Mutex<Vec<u16>>>,
    start: usize,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut at = start;
        while !stop.is_cancelled() {
            let port = {
                let ports = ports.lock().expect("lock");
                ports[at % ports.len()]
            };
            at += 1;
            let url = socket_url(port, &token("service_role"), "1.0.0");
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let since = seen.lock().expect("lock").changes.last().map(|c| c.1.clone());
            let mut config = json!({ "postgres_changes": all_items() });
            if let Some(since) = since {
                config["postgres_changes_options"] = json!({ "since": since });
            }
            let join = json!({ "topic": "realtime:resume", "event": "phx_join", "ref": "1", "join_ref": "1", "payload": { "config": config } });
            if ws.send(Message::text(join.to_string())).await.is_err() {
                continue;
            }
            seen.lock().expect("lock").joins += 1;
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = ws.next() => m,
                };
                let Some(Ok(Message::Text(text))) = message else {
                    if matches!(message, Some(Ok(_))) {
                        continue;
                    }
                    break;
                };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let payload = &frame["payload"];
                match frame["event"].as_str() {
                    Some("postgres_changes") => seen.lock().expect("lock").changes.push((
                        payload["data"]["record"]["id"].as_i64().unwrap_or(-1),
                        payload["position"].as_str().unwrap_or_default().to_owned(),
                        Instant::now(),
                    )),
                    Some("system") if payload["refetch"] == json!(true) => {
                        seen.lock().expect("lock").refetches.push(payload.clone());
                    }
                    Some("system") if payload["message"] == json!("Subscribed to PostgreSQL") => {
                        seen.lock().expect("lock").subscribed += 1;
                    }
                    _ => {}
                }
            }
        }
    });
}

/// Compares what a client saw with ids `1..=rows`: (missing, duplicated, reordered).
fn check(label: &str, seen: &Seen, rows: i64) -> (usize, usize, usize) {
    let got: Vec<i64> = seen.changes.iter().map(|c| c.0).collect();
    let unique: std::collections::BTreeSet<i64> = got.iter().copied().collect();
    let missing = (1..=rows).filter(|id| !unique.contains(id)).count();
    let duplicated = got.len() - unique.len();
    let reordered = seen.changes.windows(2).filter(|w| w[0].1 >= w[1].1).count();
    println!(
        "{label}: committed {rows}, received {} over {} joins, missing {missing}, duplicated {duplicated}, reordered {reordered}, refetch signals {}",
        got.len(),
        seen.joins,
        seen.refetches.len()
    );
    (missing, duplicated, reordered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_10000_inserts_resuming_clients_on_any_node_get_every_change_once_in_order() {
    const ROWS: i64 = 10_000;
    let (pg, db, nats) = setup().await;
    let mut nodes = start_nodes(&pg, &nats, 3).await;
    let leader = settled(&nodes).await;
    let (_, clients, stop) = resuming_clients(&nodes, 6).await;
    exec(&db, "INSERT INTO items (grp) VALUES (0)").await;
    wait_until("a first change at every client", || async {
        clients
            .iter()
            .all(|c| !c.lock().expect("lock").changes.is_empty())
    })
    .await;
    let url = pg.url("postgres");
    let writer = write_items(url, 1, ROWS);
    wait_until("a third of the rows", || async {
        clients
            .iter()
            .all(|c| c.lock().expect("lock").changes.len() as i64 >= ROWS / 3)
    })
    .await;
    let killed = Instant::now();
    nodes[leader].kill();
    // Rows committed after this were streamed by the new leader: the old one is dead.
    let committed_at_kill: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0)::int8 FROM items")
        .fetch_one(&db)
        .await
        .expect("the rows so far");
    writer.await.expect("the writer");
    wait_until("every row at every client", || async {
        clients.iter().all(|c| {
            let seen = c.lock().expect("lock");
            seen.changes.iter().map(|c| c.0).max() == Some(ROWS)
        })
    })
    .await;
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let first_after = clients
        .iter()
        .flat_map(|c| {
            let seen = c.lock().expect("lock");
            seen.changes
                .iter()
                .filter(|c| c.0 > committed_at_kill)
                .map(|c| c.2)
                .min()
        })
        .min()
        .expect("changes after the kill");
    let leader_now = settled(&nodes).await;
    println!(
        "failover: {} killed, {} leads; first change committed after the kill delivered {} ms after the kill",
        nodes[leader].id,
        nodes[leader_now].id,
        first_after.duration_since(killed).as_millis()
    );
    let mut bad = 0;
    for (i, client) in clients.iter().enumerate() {
        let (missing, duplicated, reordered) =
            check(&format!("client {i}"), &client.lock().expect("lock"), ROWS);
        bad += missing + duplicated + reordered;
    }
    assert_eq!(bad, 0, "every change once, in order, at every client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_nats_under_load_fetches_what_it_missed() {
    let (pg, db, nats) = setup().await;
    let nodes = start_nodes(&pg, &nats, 3).await;
    let leader = settled(&nodes).await;
    let follower = (leader + 1) % 3;
    let mut subscriber = Subscriber::join(
        nodes[follower].service(),
        &token("service_role"),
        "gap",
        all_items(),
        None,
    )
    .await;
    let url = pg.url("postgres");
    let writer = tokio::spawn(async move {
        let db = sqlx::PgPool::connect(&url).await.expect("connect");
        for _ in 0..100 {
            exec(
                &db,
                "INSERT INTO items (grp) SELECT g % 2 FROM generate_series(1, 10) g",
            )
            .await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Its connection drops and new ones stall for 2 s: what was published meanwhile is lost
    // to it.
    nodes[follower].nats.cut();
    nodes[follower].nats.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[follower].nats.resume();
    writer.await.expect("the writer");
    let got = read_changes(&mut subscriber, 1000).await;
    assert_eq!(got.iter().map(|c| c.0).collect::<Vec<_>>(), ids(1, 1000));
    let fetches = nodes[follower].metric("realtime_cluster_gap_fetches_total").await;
    println!("gap fetches on the follower: {fetches}");
    assert!(fetches > 0.0);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_nats_steps_down_and_nothing_is_lost() {
    let (pg, db, nats) = setup().await;
    let nodes = start_nodes(&pg, &nats, 3).await;
    let leader = settled(&nodes).await;
    let mut subscribers = Vec::new();
    for node in &nodes {
        subscribers
            .push(Subscriber::join(node.service(), &token("service_role"), "cut", all_items(), None).await);
    }
    insert(&db, 50).await;
    nodes[leader].nats.cut();
    nodes[leader].nats.pause();
    insert(&db, 50).await;
    // Longer than the grace: another node leads.
    wait_until("another leader", || async {
        for (i, node) in nodes.iter().enumerate() {
            if i != leader && node.is_leader().await {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        !nodes[leader].is_leader().await,
        "the cut-off leader stepped down"
    );
    insert(&db, 50).await;
    nodes[leader].nats.resume();
    insert(&db, 50).await;
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        expect_exactly(subscriber, 200, &format!("node {i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_node_warms_up_and_resumes_a_client_from_an_old_position() {
    let (pg, db, nats) = setup().await;
    let mut nodes = start_nodes(&pg, &nats, 2).await;
    settled(&nodes).await;
    let mut early = Subscriber::join(
        nodes[0].service(),
        &token("service_role"),
        "late",
        all_items(),
        None,
    )
    .await;
    insert(&db, 300).await;
    let got = read_changes(&mut early, 300).await;
    let since = got[49].1.clone();

    nodes.push(Node::start(&pg, &nats, "node-late").await);
    wait_until("the late node to be ready", || nodes[2].ready()).await;
    assert_eq!(nodes[2].metric("realtime_cluster_warm").await, 1.0);
    let mut resumed = Subscriber::join_with(
        nodes[2].service(),
        &token("service_role"),
        "late",
        all_items(),
        None,
        json!({ "since": since }),
    )
    .await;
    let replay = read_changes(&mut resumed, 250).await;
    assert_eq!(replay.iter().map(|c| c.0).collect::<Vec<_>>(), ids(51, 300));
    match resumed.next_push(PATIENCE).await {
        Some((event, payload)) => assert!(
            event == "system" && payload["resumed"] == json!(true),
            "expected the seam, got {event} {payload}"
        ),
        None => panic!("no seam"),
    }
    // And live from there.
    insert(&db, 5).await;
    let live = read_changes(&mut resumed, 5).await;
    assert_eq!(live.iter().map(|c| c.0).collect::<Vec<_>>(), ids(301, 305));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_loses_nothing_for_resuming_clients() {
    const ROWS: i64 = 3_000;
    let (pg, db, nats) = setup().await;
    let mut nodes = start_nodes(&pg, &nats, 3).await;
    settled(&nodes).await;
    let (ports, clients, stop) = resuming_clients(&nodes, 3).await;
    let url = pg.url("postgres");
    let writer = tokio::spawn(async move {
        let db = sqlx::PgPool::connect(&url).await.expect("connect");
        for _ in 0..ROWS / 10 {
            exec(
                &db,
                "INSERT INTO items (grp) SELECT g % 2 FROM generate_series(1, 10) g",
            )
            .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // SIGTERM each node in turn, start it again, and wait until the cluster has settled (exactly
    // one leader, every node ready) before the next.
    for i in 0..nodes.len() {
        let service = nodes[i].service.take().expect("running");
        let mut process = service.process;
        process.terminate(PATIENCE);
        settled(&nodes).await;
        nodes[i].launch();
        ports.lock().expect("lock")[i] = nodes[i].port();
        let leader = settled(&nodes).await;
        println!("restarted {}; {} leads", nodes[i].id, nodes[leader].id);
    }
    writer.await.expect("the writer");
    wait_until("every row at every client", || async {
        clients
            .iter()
            .all(|c| c.lock().expect("lock").changes.iter().map(|c| c.0).max() == Some(ROWS))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let mut bad = 0;
    for (i, client) in clients.iter().enumerate() {
        let (missing, duplicated, reordered) =
            check(&format!("client {i}"), &client.lock().expect("lock"), ROWS);
        bad += missing + duplicated + reordered;
    }
    assert_eq!(bad, 0, "every change once, in order, at every client");
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_loses_no_change() {
    let (pg, db, mut nats) = setup().await;
    let nodes = start_nodes(&pg, &nats, 3).await;
    settled(&nodes).await;
    let mut subscribers = Vec::new();
    for node in &nodes {
        subscribers.push(
            Subscriber::join(
                node.service(),
                &token("service_role"),
                "restart",
                all_items(),
                None,
            )
            .await,
        );
    }
    insert(&db, 50).await;
    nats.kill();
    insert(&db, 50).await;
    // Shorter than the leader's grace: the leader keeps streaming meanwhile.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    nats.restart();
    insert(&db, 50).await;
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        expect_exactly(subscriber, 150, &format!("node {i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_from_postgres_is_replaced_and_never_leads_beside_the_new_one() {
    let (pg, db, nats) = setup().await;
    let nodes = start_nodes(&pg, &nats, 3).await;
    let leader = settled(&nodes).await;
    let (_, clients, stop) = resuming_clients(&nodes, 6).await;
    // Every node's claim to lead, sampled throughout: never two at once.
    let watching = CancellationToken::new();
    let claims = {
        let (node_ports, watching) = (
            nodes.iter().map(Node::port).collect::<Vec<u16>>(),
            watching.clone(),
        );
        tokio::spawn(async move {
            let mut most = 0;
            let mut leaders_seen = Vec::new();
            while !watching.is_cancelled() {
                let mut leaders = Vec::new();
                for (i, port) in node_ports.iter().enumerate() {
                    let text = http_get(*port, "/metrics").await;
                    if metric(&text, "realtime_cluster_leader") == 1.0 {
                        leaders.push(i);
                    }
                }
                most = most.max(leaders.len());
                for i in leaders {
                    if !leaders_seen.contains(&i) {
                        leaders_seen.push(i);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (most, leaders_seen)
        })
    };
    let writing = CancellationToken::new();
    let writer = {
        let (url, writing) = (pg.url("postgres"), writing.clone());
        tokio::spawn(async move {
            let db = sqlx::PgPool::connect(&url).await.expect("connect");
            while !writing.is_cancelled() {
                exec(
                    &db,
                    "INSERT INTO items (grp) SELECT g % 2 FROM generate_series(1, 10) g",
                )
                .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    wait_until("changes flowing to every client", || async {
        clients
            .iter()
            .all(|c| c.lock().expect("lock").changes.len() >= 300)
    })
    .await;
    // A silent stall: no FIN, no RST; nothing moves either way on the leader's Postgres links.
    nodes[leader].postgres.pause();
    let paused = Instant::now();
    wait_until("another node to lead", || async {
        for (i, node) in nodes.iter().enumerate() {
            if i != leader && node.is_leader().await {
                return true;
            }
        }
        false
    })
    .await;
    let takeover = paused.elapsed();
    println!("another node leads {} ms after the pause", takeover.as_millis());
    assert!(
        !nodes[leader].is_leader().await,
        "the paused leader no longer claims to lead"
    );
    // The stream goes on from the new leader while the old one is still cut off.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[leader].postgres.resume();
    // The old leader's link is back: it must queue for the lock, not stream beside the new one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    writing.cancel();
    writer.await.expect("the writer");
    let rows: i64 = sqlx::query_scalar("SELECT max(id)::int8 FROM items")
        .fetch_one(&db)
        .await
        .expect("the rows");
    wait_until("every row at every client", || async {
        clients
            .iter()
            .all(|c| c.lock().expect("lock").changes.iter().map(|c| c.0).max() == Some(rows))
    })
    .await;
    // Late duplicates (a stale leader's resend) would show up now.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.cancel();
    watching.cancel();
    let (most, leaders_seen) = claims.await.expect("the watcher");
    let now = settled(&nodes).await;
    assert_ne!(now, leader, "the old leader did not take the stream back");
    // Postgres agrees: the slot's walsender is the lock holder; the old leader waits in line.
    let active: Option<i32> =
        sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
            .bind(SLOT)
            .fetch_one(&db)
            .await
            .expect("the slot");
    let locks: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' \
         AND pid IN (SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender')",
    )
    .fetch_all(&db)
    .await
    .expect("advisory locks");
    let granted: Vec<i32> = locks.iter().filter(|l| l.1).map(|l| l.0).collect();
    assert_eq!(granted, [active.expect("an active slot")]);
    assert_eq!(locks.iter().filter(|l| !l.1).count(), 2, "{locks:?}");
    println!(
        "paused {}; {} leads; leaders seen {leaders_seen:?}, at most {most} at once",
        nodes[leader].id, nodes[now].id
    );
    assert_eq!(most, 1, "never two leaders at once");
    assert!(
        takeover < Duration::from_secs(25),
        "another node leads within wal_sender_timeout and a few seconds: {takeover:?}"
    );
    let mut bad = 0;
    for (i, client) in clients.iter().enumerate() {
        let (missing, duplicated, reordered) =
            check(&format!("client {i}"), &client.lock().expect("lock"), rows);
        bad += missing + duplicated + reordered;
    }
    assert_eq!(bad, 0, "every change once, in order, at every client");
    // Nothing the old leader sent on its way out made a node see a hole it could not fill.
    for node in &nodes {
        assert_eq!(
            node.metric("realtime_cluster_gaps_total").await,
            0.0,
            "{}",
            node.id
        );
    }
}

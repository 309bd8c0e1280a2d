//! Broadcast and presence across the nodes of a cluster: `realtime serve` processes on one real
//! `nats-server`, each reaching it through its own TCP proxy so its link can be paused.

use std::time::{Duration, Instant};

use realtime_tests::cluster::{Client, ClusterNode, DOWN_AFTER_MS, rest_broadcast, unlimited_broadcasts};
use realtime_tests::nats::NatsServer;
use serde_json::{Value, json};

const MESSAGES: u64 = 1_000;

/// Broadcasts `probe` from `from` until `to` receives one: a node listens to a topic's traffic
/// from its first local subscriber on, which takes a moment after the join reply.
async fn until_connected(from: &mut Client, to: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            Instant::now() < deadline,
            "no broadcast crossed the nodes within 15 s"
        );
        from.broadcast("probe", json!({})).await;
        if let Some(frame) = to.next_event("broadcast", Duration::from_millis(300)).await {
            assert_eq!(frame["payload"]["event"], "probe");
            // Let the probes in flight arrive, then forget them.
            to.drain(Duration::from_millis(300)).await;
            return;
        }
    }
}

fn broadcast_event(frame: &Value) -> Option<&str> {
    (frame["event"] == "broadcast").then(|| frame["payload"]["event"].as_str().unwrap_or_default())
}

fn keys(side: &Value) -> Vec<String> {
    let mut keys: Vec<String> = side
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_other_nodes_in_order_with_self_and_ack_unchanged() {
    let nats = NatsServer::start();
    let fast = unlimited_broadcasts();
    let n1 = ClusterNode::start(nats.port, "n1", &fast).await;
    let n2 = ClusterNode::start(nats.port, "n2", &fast).await;
    let n3 = ClusterNode::start(nats.port, "n3", &fast).await;

    let mut a = Client::join(n1.port, "room", json!({"self": false, "ack": true}), "a").await;
    let mut b = Client::join(n2.port, "room", json!({"self": false, "ack": false}), "b").await;
    let mut probe = Client::join(n1.port, "room", json!({"self": false}), "probe").await;
    until_connected(&mut probe, &mut b).await;
    a.drain(Duration::from_millis(300)).await;

    let mut refs = Vec::new();
    for i in 0..MESSAGES {
        refs.push(a.broadcast("move", json!({"i": i})).await);
    }
    // Every message is acknowledged to its sender, who does not receive its own (self: false).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut acked = 0;
    while acked < refs.len() {
        let frame = a.frame(deadline).await.expect("every ack within 30 s");
        assert_ne!(
            broadcast_event(&frame),
            Some("move"),
            "self: false was not respected"
        );
        if frame["event"] == "phx_reply" && refs.iter().any(|r| frame["ref"] == r.as_str()) {
            assert_eq!(frame["payload"]["status"], "ok", "{frame}");
            acked += 1;
        }
    }
    // The other node delivers all of them, in the order sent.
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.len() < MESSAGES as usize {
        let Some(frame) = b.frame(deadline).await else {
            panic!("node 2 delivered {} of {MESSAGES} within 30 s", received.len());
        };
        if broadcast_event(&frame) == Some("move") {
            received.push(frame["payload"]["payload"]["i"].as_u64().expect("i"));
        }
    }
    assert_eq!(received, (0..MESSAGES).collect::<Vec<_>>(), "per-sender order");

    // REST through a third node, which has no subscriber of its own on the topic.
    assert_eq!(
        rest_broadcast(n3.port, "room", "rest", json!({"via": 3})).await,
        202
    );
    for client in [&mut a, &mut b] {
        let frame = client
            .next_event("broadcast", Duration::from_secs(10))
            .await
            .expect("the REST broadcast");
        assert_eq!(frame["payload"]["event"], "rest");
        assert_eq!(frame["payload"]["payload"]["via"], 3);
    }
    let publish_dropped = realtime_tests::service::metric(
        &realtime_tests::service::http_get(n1.port, "/metrics").await,
        "realtime_cluster_publish_dropped_total",
    );
    println!("1000 broadcasts crossed nodes in order; publish drops on node 1: {publish_dropped}");
    let nodes = realtime_tests::service::metric(
        &realtime_tests::service::http_get(n3.port, "/metrics").await,
        "realtime_cluster_nodes",
    );
    assert_eq!(nodes, 3.0, "node 3 hears the two others");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide_survives_a_pause_and_leaves_on_a_crash() {
    let nats = NatsServer::start();
    let mut n1 = ClusterNode::start(nats.port, "n1", &[]).await;
    let n2 = ClusterNode::start(nats.port, "n2", &[]).await;
    let n3 = ClusterNode::start(nats.port, "n3", &[]).await;
    // Let the nodes hear each other.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut watcher = Client::join(n3.port, "lobby", json!({}), "w").await;
    let mut p = Client::join(n1.port, "lobby", json!({}), "p1").await;
    p.track(json!({"name": "p"})).await;
    // Diffs reach sockets on other nodes.
    let diff = watcher
        .next_event("presence_diff", Duration::from_secs(10))
        .await
        .expect("the join's diff on node 3");
    assert_eq!(keys(&diff["payload"]["joins"]), ["p1"]);
    assert_eq!(diff["payload"]["joins"]["p1"]["metas"][0]["name"], "p");

    // A later join elsewhere gets the member in its presence_state.
    let mut q = Client::join(n2.port, "lobby", json!({}), "q").await;
    let state = q
        .next_event("presence_state", Duration::from_secs(5))
        .await
        .expect("presence_state");
    assert_eq!(keys(&state["payload"]), ["p1"], "{state}");
    // The first sync of the topic on node 2 may also bring the member as a diff after the state
    // (a diff may arrive twice, never zero times); let it pass before watching for flaps.
    q.drain(Duration::from_millis(500)).await;
    watcher.drain(Duration::from_millis(500)).await;

    // A pause of node 1's NATS link shorter than down_after: nobody leaves, nothing flaps.
    n1.proxy.pause();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    n1.proxy.resume();
    for client in [&mut q, &mut watcher] {
        let frames = client.drain(Duration::from_secs(2)).await;
        let diffs: Vec<&Value> = frames.iter().filter(|f| f["event"] == "presence_diff").collect();
        assert!(diffs.is_empty(), "presence flapped during a pause: {diffs:?}");
    }

    // kill -9: its members leave within down_after (plus a heartbeat or two).
    let killed = Instant::now();
    n1.kill();
    let bound = Duration::from_millis(DOWN_AFTER_MS + 1_000);
    let leave = q
        .next_event("presence_diff", bound)
        .await
        .expect("the crashed node's member left within down_after + 1 s");
    assert_eq!(keys(&leave["payload"]["leaves"]), ["p1"]);
    println!("leave arrived {:?} after kill -9", killed.elapsed());
    let leave = watcher
        .next_event("presence_diff", Duration::from_secs(2))
        .await
        .expect("the leave on node 3 too");
    assert_eq!(keys(&leave["payload"]["leaves"]), ["p1"]);

    // Restarted: its new member shows, its old one does not come back.
    n1.restart();
    let mut p2 = Client::join(n1.port, "lobby", json!({}), "p2").await;
    let state = p2
        .next_event("presence_state", Duration::from_secs(5))
        .await
        .expect("presence_state on the restarted node");
    assert_eq!(keys(&state["payload"]), Vec::<String>::new(), "{state}");
    p2.track(json!({"name": "p2"})).await;
    let diff = watcher
        .next_event("presence_diff", Duration::from_secs(10))
        .await
        .expect("the new member's diff");
    assert_eq!(keys(&diff["payload"]["joins"]), ["p2"]);
    // Node 2 has it once its own socket got it (nodes receive a diff independently).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let diff = q
            .next_event("presence_diff", left)
            .await
            .expect("the new member's diff on node 2");
        if keys(&diff["payload"]["joins"]) == ["p2"] {
            break;
        }
    }
    let mut late = Client::join(n2.port, "lobby", json!({}), "late").await;
    let state = late
        .next_event("presence_state", Duration::from_secs(5))
        .await
        .expect("presence_state");
    assert_eq!(
        keys(&state["payload"]),
        ["p2"],
        "no ghost of the killed node: {state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_nats_restart_broadcasts_flow_again_and_presence_did_not_flap() {
    let mut nats = NatsServer::start();
    let n1 = ClusterNode::start(nats.port, "n1", &[]).await;
    let n2 = ClusterNode::start(nats.port, "n2", &[]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut p = Client::join(n1.port, "lobby", json!({}), "p").await;
    p.track(json!({"name": "p"})).await;
    let mut q = Client::join(n2.port, "lobby", json!({}), "q").await;
    let state = q
        .next_event("presence_state", Duration::from_secs(5))
        .await
        .expect("presence_state");
    assert_eq!(keys(&state["payload"]), ["p"]);
    let mut a = Client::join(n1.port, "room", json!({"self": false}), "a").await;
    let mut b = Client::join(n2.port, "room", json!({"self": false}), "b").await;
    until_connected(&mut a, &mut b).await;

    // NATS is gone for longer than down_after: every node lost its own link, so each freezes
    // the others' entries instead of declaring them down.
    nats.kill();
    let outage = Duration::from_millis(DOWN_AFTER_MS + 1_500);
    let frames = q.drain(outage).await;
    nats.restart();
    // Broadcasts flow again once the nodes reconnected (what was sent meanwhile is lost).
    until_connected(&mut a, &mut b).await;
    let frames: Vec<Value> = frames
        .into_iter()
        .chain(q.drain(Duration::from_secs(2)).await)
        .collect();
    let leaves: Vec<&Value> = frames
        .iter()
        .filter(|f| f["event"] == "presence_diff" && !keys(&f["payload"]["leaves"]).is_empty())
        .collect();
    assert!(
        leaves.is_empty(),
        "presence flapped across the NATS restart: {leaves:?}"
    );
    let mut late = Client::join(n2.port, "lobby", json!({}), "late").await;
    let state = late
        .next_event("presence_state", Duration::from_secs(5))
        .await
        .expect("presence_state");
    assert_eq!(
        keys(&state["payload"]),
        ["p"],
        "the member is still there: {state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_reach_nats_at_start_exits_with_a_clear_error() {
    let nats = NatsServer::start();
    let port = nats.port;
    drop(nats);
    let mut process = realtime_tests::Process::spawn(
        &["serve"],
        &[
            ("PORT", realtime_tests::free_port().to_string()),
            ("API_JWT_SECRET", realtime_tests::auth::SECRET.to_owned()),
            ("NATS_URL", format!("nats://u:secret-pw@127.0.0.1:{port}")),
        ],
    );
    let status = process.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let stderr = process.stderr();
    assert!(
        stderr.contains("cannot connect to NATS at nats://[redacted]@127.0.0.1"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-pw"), "the password leaked: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_last_presence_diff_is_repaired_without_a_further_change() {
    // Heartbeats of 1 s: the outage below stays shorter than the silence (2.25 s) that would
    // make node 2 sync with node 1 anyway.
    let slow = [("CLUSTER_HEARTBEAT_MS", "1000".to_owned())];
    let nats = NatsServer::start();
    let n1 = ClusterNode::start(nats.port, "n1", &slow).await;
    let n2 = ClusterNode::start(nats.port, "n2", &slow).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut watcher = Client::join(n2.port, "stage", json!({}), "w").await;
    let mut p = Client::join(n1.port, "stage", json!({}), "p").await;
    p.track(json!({"mood": "calm"})).await;
    let diff = watcher
        .next_event("presence_diff", Duration::from_secs(10))
        .await
        .expect("the join's diff on node 2");
    assert_eq!(diff["payload"]["joins"]["p"]["metas"][0]["mood"], "calm");
    watcher.drain(Duration::from_millis(500)).await;
    p.drain(Duration::from_millis(300)).await;

    // The member's next (and last) change is lost on the way: node 1 writes it into a link
    // that holds it, and the link then drops with it.
    n1.proxy.pause();
    p.track(json!({"mood": "busy"})).await;
    p.next_event("presence_diff", Duration::from_secs(5))
        .await
        .expect("the update on node 1 itself");
    tokio::time::sleep(Duration::from_millis(100)).await;
    n1.proxy.cut();
    // The held bytes go with the dropped connection, not onto a resumed one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    n1.proxy.resume();
    let lost = Instant::now();

    // No further change anywhere; node 2 still converges, within a bound.
    let bound = Duration::from_secs(6);
    let deadline = Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let diff = watcher
            .next_event("presence_diff", left)
            .await
            .unwrap_or_else(|| panic!("node 2 did not converge within {bound:?}"));
        if diff["payload"]["joins"]["p"]["metas"][0]["mood"] == "busy" {
            assert_eq!(
                diff["payload"]["leaves"]["p"]["metas"][0]["mood"], "calm",
                "{diff}"
            );
            break;
        }
    }
    println!("node 2 converged {:?} after the diff was lost", lost.elapsed());
    // Repaired by the topic's head, not by a node counted as silent and synced whole.
    let log = n2.process.stderr();
    assert!(log.contains("a presence diff was lost"), "{log}");
    // A client joining node 2 now sees the member as it is.
    let mut late = Client::join(n2.port, "stage", json!({}), "late").await;
    let state = late
        .next_event("presence_state", Duration::from_secs(5))
        .await
        .expect("presence_state");
    let metas = state["payload"]["p"]["metas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(metas.len(), 1, "{state}");
    assert_eq!(metas[0]["mood"], "busy", "{state}");
}

//! `realtime-bench`: benchmarks that start their own Postgres and server on loopback and print
//! their numbers, ending with one `result <name> key=value ...` line.
//!
//! Usage: `cargo run --release --bin realtime-bench -- <cdc|broadcast|changes|changes-sweep|cluster|db-broadcast|peers|presence|scale>`

mod bench;

// The server runs inside this process in most benchmarks: the same allocator as the binary.
#[global_allocator]
static ALLOCATOR: realtime::Allocator = realtime::Allocator;

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    match which.as_str() {
        "cdc" => bench::cdc::main(),
        // Broadcast fan-out over three nodes on NATS against one node.
        "cluster" => bench::cluster::main(),
        "broadcast" => bench::broadcast::main(),
        // The broadcast benchmark's load generator, started by `broadcast` as a child process.
        "broadcast-clients" => bench::broadcast::clients_main(),
        "changes" => bench::changes::main(),
        // Postgres Changes latency and CPU per delivery against the commit rate.
        "changes-sweep" => bench::changes::sweep_main(),
        // One process at its descriptor limit: 19,000 joined sockets held while broadcasts reach
        // them all.
        "scale" => bench::broadcast::scale::main(),
        // Broadcast from the database to private channels authorized by RLS.
        "db-broadcast" => bench::db_broadcast::main(),
        // The db-broadcast benchmark's subscribers, started by `db-broadcast` as a child process.
        "db-broadcast-clients" => bench::db_broadcast::clients_main(),
        // The broadcast workload against peer servers (uWebSockets.js, ws, Socket.IO, NATS).
        "peers" => bench::peers::main(),
        // Presence diff latency and join-into-state time in a 1,000-member channel.
        "presence" => bench::presence::main(),
        // The changes benchmark's subscribers, started by `changes` as a child process.
        "changes-clients" => bench::changes::clients_main(),
        _ => anyhow::bail!(
            "usage: realtime-bench <cdc|broadcast|changes|changes-sweep|cluster|db-broadcast|peers|presence|scale>"
        ),
    }
}

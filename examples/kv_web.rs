//! A web service that embeds raftor next to its own actix-web routes: a replicated notebook.
//!
//! ```text
//! PUT /notes/{name}   (body: the text)     200 {"index": ..., "previous": ...} once committed
//! GET /notes/{name}?consistency=linearizable|lease|local   200 the text, 404 when absent
//! GET /raft                                {"id", "role", "term", "leader"}
//! ```
//! A node that does not lead answers writes (and linearizable reads) with 421 and the leader's id.
//!
//! One node of a cluster (run one per terminal, ids 1 to 3):
//!
//! ```sh
//! cargo run --example kv_web -- --id 1 --peers 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 \
//!     --http 127.0.0.1:8101 --data-dir /tmp/notes-1
//! curl -X PUT --data 'buy milk' http://127.0.0.1:8101/notes/todo
//! ```
//!
//! Or a self-check: three nodes in this process, a write and reads over HTTP, then exit:
//!
//! ```sh
//! cargo run --example kv_web -- --demo
//! ```

use actix_web::{web, App, HttpResponse, HttpServer};
use raftor::{Consistency, Error, LogIndex, NodeId, RaftNode, RaftNodeBuilder, StateMachine};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The replicated state: named notes.
#[derive(Default)]
struct Notebook {
    notes: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
enum Edit {
    Write { name: String, text: String },
}

#[derive(Serialize, Deserialize)]
struct Written {
    index: u64,
    previous: Option<String>,
}

impl StateMachine for Notebook {
    type Command = Edit;
    type Response = Written;
    type Query = String; // a note's name
    type QueryResponse = Option<String>;
    type Snapshot = BTreeMap<String, String>;

    fn apply(&mut self, index: LogIndex, edit: Edit) -> Written {
        match edit {
            Edit::Write { name, text } => Written {
                index: index.0,
                previous: self.notes.insert(name, text),
            },
        }
    }

    fn query(&self, name: &String) -> Option<String> {
        self.notes.get(name).cloned()
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        self.notes.clone()
    }

    fn restore(&mut self, notes: BTreeMap<String, String>) {
        self.notes = notes;
    }
}

type Node = RaftNode<Notebook>;

/// What a failed request answers: each [`Error`] says what happened to the request.
fn failure(error: Error) -> HttpResponse {
    match error {
        Error::NotLeader { leader } => HttpResponse::MisdirectedRequest()
            .json(json!({ "error": "not the leader", "leader": leader.map(|l| l.0) })),
        // The write may still be applied: tell the client rather than pretend it failed.
        error if error.may_have_applied() => {
            HttpResponse::GatewayTimeout().json(json!({ "error": error.to_string() }))
        }
        error => HttpResponse::ServiceUnavailable().json(json!({ "error": error.to_string() })),
    }
}

async fn put_note(node: web::Data<Node>, name: web::Path<String>, text: String) -> HttpResponse {
    let edit = Edit::Write {
        name: name.into_inner(),
        text,
    };
    match node.propose(edit).await {
        Ok(written) => HttpResponse::Ok().json(json!({
            "index": written.index,
            "previous": written.previous,
        })),
        Err(error) => failure(error),
    }
}

#[derive(Deserialize)]
struct ReadParams {
    consistency: Option<String>,
}

async fn get_note(
    node: web::Data<Node>,
    name: web::Path<String>,
    params: web::Query<ReadParams>,
) -> HttpResponse {
    let consistency = match params.consistency.as_deref().map(str::parse) {
        None => Consistency::Linearizable,
        Some(Ok(consistency)) => consistency,
        Some(Err(message)) => return HttpResponse::BadRequest().json(json!({ "error": message })),
    };
    match node.read(name.into_inner(), consistency).await {
        Ok(Some(text)) => HttpResponse::Ok().body(text),
        Ok(None) => HttpResponse::NotFound().json(json!({ "error": "no such note" })),
        Err(error) => failure(error),
    }
}

async fn raft_status(node: web::Data<Node>) -> HttpResponse {
    let leadership = *node.leadership().borrow();
    HttpResponse::Ok().json(json!({
        "id": node.id().0,
        "role": leadership.role.as_str(),
        "term": leadership.term.0,
        "leader": leadership.leader.map(|l| l.0),
    }))
}

/// The application's routes, next to which raftor runs.
fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/notes/{name}", web::put().to(put_note))
        .route("/notes/{name}", web::get().to(get_note))
        .route("/raft", web::get().to(raft_status));
}

/// A started node with its web server.
struct Service {
    node: Node,
    http: actix_web::dev::ServerHandle,
    http_addr: SocketAddr,
}

impl Service {
    /// Start the node and its web server in the current actix System.
    async fn start(
        id: NodeId,
        peers: Vec<(NodeId, String)>,
        http: SocketAddr,
        data_dir: PathBuf,
    ) -> Result<Service, Box<dyn std::error::Error>> {
        let node = RaftNodeBuilder::new()
            .id(id)
            .peers(peers)
            .data_dir(data_dir)
            .cluster_id("notebook")
            .start(Notebook::default())
            .await?;
        let data = web::Data::new(node.clone());
        let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
            .workers(1)
            .disable_signals()
            .bind(http)?;
        let http_addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(Service {
            node,
            http: handle,
            http_addr,
        })
    }

    /// Stop taking HTTP requests, then stop the node.
    async fn stop(self) {
        self.http.stop(true).await;
        self.node.shutdown().await;
    }
}

fn parse_peers(text: &str) -> Result<Vec<(NodeId, String)>, String> {
    text.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (id, address) = item
                .split_once('=')
                .ok_or_else(|| format!("bad peer '{item}' (expected id=host:port)"))?;
            let id = id.parse().map_err(|_| format!("bad node id '{id}'"))?;
            Ok((NodeId(id), address.to_string()))
        })
        .collect()
}

/// Three nodes in this process: write through HTTP, read back from every node, stop.
async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let free = || -> std::io::Result<SocketAddr> {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
    };
    let peers: Vec<(NodeId, String)> = (1..=3)
        .map(|id| Ok((NodeId(id), free()?.to_string())))
        .collect::<std::io::Result<_>>()?;
    let mut services = Vec::new();
    for (id, _) in &peers {
        let data_dir = dir.path().join(format!("node-{id}"));
        services.push(Service::start(*id, peers.clone(), free()?, data_dir).await?);
    }
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();

    // Write through node 1, following its hint to the leader.
    let mut target = 0;
    let mut written = None;
    for _ in 0..100 {
        let url = format!("http://{}/notes/todo", services[target].http_addr);
        let mut response = client.put(url).send_body("buy milk").await?;
        let body: serde_json::Value = response.json().await?;
        match response.status().as_u16() {
            200 => {
                written = Some(body);
                break;
            }
            421 => match body["leader"].as_u64() {
                Some(leader) => target = (leader - 1) as usize,
                None => actix_rt::time::sleep(Duration::from_millis(50)).await,
            },
            status => return Err(format!("PUT answered {status}: {body}").into()),
        }
    }
    let written = written.ok_or("no leader took the write")?;
    println!("written through node {}: {written}", target + 1);

    // A linearizable read on the leader, then each node's own copy.
    let url = format!("http://{}/notes/todo", services[target].http_addr);
    let text = client.get(url).send().await?.body().await?;
    println!("read from the leader: {}", String::from_utf8_lossy(&text));
    if text != "buy milk" {
        return Err("the leader does not hold the note".into());
    }
    for service in &services {
        let url = format!("http://{}/notes/todo?consistency=local", service.http_addr);
        let mut found = false;
        for _ in 0..100 {
            let mut response = client.get(url.as_str()).send().await?;
            if response.status() == 200 && response.body().await? == "buy milk" {
                found = true;
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        if !found {
            return Err(format!("node {} never applied the note", service.node.id()).into());
        }
        println!("node {} holds the note", service.node.id());
    }
    for service in services {
        service.stop().await;
    }
    println!("demo passed");
    Ok(())
}

/// `--demo`, or `--id N --peers 1=host:port,... --http addr --data-dir dir`.
async fn run(args: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    if args.iter().any(|arg| arg == "--demo") {
        return demo().await;
    }
    let mut flags = BTreeMap::new();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        flags.insert(flag, value);
    }
    let flag = |name: &str| {
        flags
            .get(name)
            .cloned()
            .ok_or(format!("missing {name} (or run with --demo)"))
    };
    let id = NodeId(flag("--id")?.parse()?);
    let peers = parse_peers(&flag("--peers")?)?;
    let http: SocketAddr = flag("--http")?.parse()?;
    let data_dir = PathBuf::from(flag("--data-dir")?);
    let service = Service::start(id, peers, http, data_dir).await?;
    println!("node {id}: HTTP on {}; Ctrl-C stops", service.http_addr);
    tokio::signal::ctrl_c().await?;
    service.stop().await;
    Ok(())
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(std::env::args().skip(1).collect()).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_passes() {
        actix_rt::System::new()
            .block_on(super::run(vec!["--demo".into()]))
            .expect("the demo passes");
    }

    #[test]
    fn peers_parse() {
        let peers = super::parse_peers("1=a:1,2=b:2").expect("parses");
        assert_eq!(peers.len(), 2);
        assert!(super::parse_peers("1").is_err());
    }
}

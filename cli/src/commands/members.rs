//! members (list, add, promote, remove) and transfer-leader.

use super::args::{fail, AdminArgs, EndpointArgs};
use clap::Subcommand;
use raftor_kv::protocol::MembersReport;
use raftor_kv::Client;
use serde_json::json;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    /// Show the members as the node at --endpoint sees them.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Add node ID, reachable at RAFT_ADDRESS (host:port), as a learner.
    Add {
        id: u64,
        raft_address: String,
        /// Promote it to voter once it has caught up with the leader.
        #[arg(long)]
        promote: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the learner ID a voter.
    Promote {
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove node ID (voter or learner) from the cluster.
    Remove {
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

impl MembersCommand {
    /// The node the command goes to.
    pub fn admin(&self) -> &AdminArgs {
        match self {
            MembersCommand::List { admin }
            | MembersCommand::Add { admin, .. }
            | MembersCommand::Promote { admin, .. }
            | MembersCommand::Remove { admin, .. } => admin,
        }
    }
}

pub async fn transfer_leader(client: &Client, admin: &AdminArgs, id: u64) -> ExitCode {
    match client.transfer_leader(id).await {
        Ok(term) => {
            if admin.json {
                println!("{}", json!({ "leader": id, "term": term }));
            } else {
                println!("node {id} leads (term {term})");
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&admin.endpoints(), &error),
    }
}

pub async fn members(client: &Client, command: MembersCommand) -> ExitCode {
    let (admin, done) = match &command {
        MembersCommand::List { admin } => (admin, None),
        MembersCommand::Add {
            id,
            promote: true,
            admin,
            ..
        } => (
            admin,
            Some(format!(
                "node {id} added as a learner; the leader promotes it once it has caught up"
            )),
        ),
        MembersCommand::Add { id, admin, .. } => {
            (admin, Some(format!("node {id} added as a learner")))
        }
        MembersCommand::Promote { id, admin } => (admin, Some(format!("node {id} is a voter"))),
        MembersCommand::Remove { id, admin } => {
            (admin, Some(format!("node {id} removed; stop it now")))
        }
    };
    let endpoints: EndpointArgs = admin.endpoints();
    let result = match &command {
        MembersCommand::List { .. } => client.members().await,
        MembersCommand::Add {
            id,
            raft_address,
            promote,
            ..
        } => client.add_member(*id, raft_address, *promote).await,
        MembersCommand::Promote { id, .. } => client.promote_member(*id).await,
        MembersCommand::Remove { id, .. } => client.remove_member(*id).await,
    };
    match result {
        Ok(report) => {
            if admin.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                if let Some(done) = done {
                    println!("{done}");
                }
                print_members(&report);
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&endpoints, &error),
    }
}

fn print_members(report: &MembersReport) {
    let leader = report
        .leader
        .as_ref()
        .map_or("unknown".to_owned(), |l| l.id.to_string());
    println!(
        "node {}'s view: leader {leader}, term {}, configuration at index {}{}",
        report.node,
        report.term,
        report.membership_index,
        if report.joint { " (joint)" } else { "" }
    );
    for (id, address) in &report.addresses {
        let role = if report.voters.contains(id) {
            "voter"
        } else if report.voters_outgoing.contains(id) {
            "outgoing voter"
        } else if report.learners.contains(id) {
            "learner"
        } else {
            "member"
        };
        let promote = if report.promote_when_caught_up.contains(id) {
            " (promoted once caught up)"
        } else {
            ""
        };
        println!("  {id}  {role:<14} {address}{promote}");
    }
}

//! `Raft::check_invariants` holds on the nodes of a working cluster, and names what broke when a
//! node's own state is made inconsistent (as a bug in the rules would make it).

use super::cluster::Cluster;
use super::{config, ids};
use crate::{LogIndex, NodeId, Role, Term};

/// A cluster of three with a leader whose first entry committed everywhere.
fn working() -> (Cluster, NodeId, NodeId) {
    let mut c = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, true)).collect());
    let leader = c.elect(300).expect("a leader");
    c.tick_all(5);
    let follower = ids(3).into_iter().find(|id| *id != leader).unwrap();
    (c, leader, follower)
}

type Break = fn(&mut crate::Raft);

#[test]
fn the_invariants_hold_in_a_working_cluster_and_each_one_is_checked() {
    let (mut c, _, _) = working();
    for id in ids(3) {
        assert_eq!(c.raft(id.0).check_invariants(), Ok(()));
    }
    let on_follower: [(&str, Break); 4] = [
        ("commit index is past the log", |r| {
            r.commit_index = LogIndex(r.log.last_index().0 + 1)
        }),
        ("durable index is past the log", |r| {
            r.durable_index = LogIndex(r.log.last_index().0 + 1)
        }),
        ("future term", |r| {
            r.current_term = Term(0);
            r.persisted.current_term = Term(0)
        }),
        ("leader state without leadership", |r| r.role = Role::Leader),
    ];
    let on_leader: [(&str, Break); 2] = [
        ("did not vote for itself", |r| r.voted_for = None),
        ("match index", |r| {
            let past = LogIndex(r.log.last_index().0 + 1);
            r.leader.as_mut().unwrap().matched.insert(NodeId(9), past);
        }),
    ];
    let cases = on_follower
        .into_iter()
        .map(|case| (false, case))
        .chain(on_leader.into_iter().map(|case| (true, case)));
    for (on_the_leader, (what, breaks)) in cases {
        let (mut c, leader, follower) = working();
        let node = if on_the_leader { leader } else { follower };
        breaks(c.raft(node.0));
        let violation = c.raft(node.0).check_invariants().expect_err(what);
        assert!(violation.what.contains(what), "{what}: {violation}");
        assert_eq!(violation.node, node);
    }
}

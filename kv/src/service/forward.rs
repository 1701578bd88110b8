//! Forwarding to the leader what only the leader can do, over the native protocol (over TLS with
//! this node's certificate when the cluster runs TLS: the leader trusts a member's session, and
//! the node that forwards has already checked the client's role).

use super::{unavailable, Runner};
use crate::protocol::{
    decode, encode, ErrorKind, KvRequest, KvResponse, LeaderInfo, RequestEnvelope, ServiceError,
};
use raftor_actors::network::client::{
    ClientConnectOptions, ClientConnection, ClientConnectionError,
};
use raftor_core::NodeId;
use std::rc::Rc;

impl Runner {
    /// Send the request to the leader over the native protocol and relay its answer.
    pub(super) async fn forward_to(
        &self,
        leader: NodeId,
        request: KvRequest,
        is_write: bool,
    ) -> KvResponse {
        let Some(addr) = self.address_of(leader) else {
            return unavailable("the leader's address is unknown");
        };
        let existing = self
            .forward
            .borrow()
            .get(&leader)
            .filter(|c| !c.is_closed())
            .cloned();
        let connection = match existing {
            Some(connection) => connection,
            None => {
                let options = ClientConnectOptions {
                    tls: self
                        .config
                        .tls
                        .as_ref()
                        .map(|tls| tls.member_client(leader)),
                    ..ClientConnectOptions::new(
                        raftor_actors::network::codec::DEFAULT_MAX_FRAME_BYTES,
                    )
                };
                let connect = ClientConnection::connect_with(&addr, &options);
                match tokio::time::timeout(self.config.request_timeout, connect).await {
                    Ok(Ok(connection)) => {
                        let connection = Rc::new(connection);
                        self.forward.borrow_mut().insert(leader, connection.clone());
                        connection
                    }
                    _ => {
                        return KvResponse::Error(
                            ServiceError::new(
                                ErrorKind::Unavailable,
                                format!("cannot reach the leader at {addr}"),
                            )
                            .with_leader(self.leader_info(leader)),
                        )
                    }
                }
            }
        };
        let envelope = RequestEnvelope {
            forwarded_by: Some(self.id),
            request,
        };
        let answer = tokio::time::timeout(
            self.config.request_timeout,
            connection.request(encode(&envelope)),
        )
        .await;
        match answer {
            Ok(Ok(body)) => decode::<KvResponse>(&body).unwrap_or_else(|message| {
                KvResponse::Error(ServiceError::new(
                    ErrorKind::Unknown,
                    format!("the leader's answer: {message}"),
                ))
            }),
            Ok(Err(ClientConnectionError::Connect { .. } | ClientConnectionError::Refused(_))) => {
                unavailable("cannot reach the leader")
            }
            Ok(Err(ClientConnectionError::Closed)) | Err(_) => {
                self.forward.borrow_mut().remove(&leader);
                // The leader may have run the write before the connection broke.
                let kind = if is_write {
                    ErrorKind::Unknown
                } else {
                    ErrorKind::Unavailable
                };
                KvResponse::Error(
                    ServiceError::new(kind, "lost the connection to the leader before its answer")
                        .with_leader(self.leader_info(leader)),
                )
            }
        }
    }

    /// The Raft address of `id`: from the newest configuration the node has seen, else from the
    /// bootstrap members.
    pub(super) fn address_of(&self, id: NodeId) -> Option<String> {
        self.node
            .address_of(id)
            .or_else(|| self.members.get(&id).cloned())
    }

    pub(super) fn leader_info(&self, id: NodeId) -> Option<LeaderInfo> {
        self.address_of(id).map(|raft_addr| LeaderInfo {
            id: id.0,
            raft_addr,
        })
    }
}

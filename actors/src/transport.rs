//! The boundary between the Raft actors and whatever carries their messages: the TCP endpoint in
//! production, an in-memory router in tests. Both speak these two messages.

use actix::Message as ActixMessage;
use raftor_core::Envelope;

/// Hand an envelope to the transport for delivery to `envelope.to`. Delivery is best effort: Raft
/// tolerates loss, duplication and reordering, so a transport may drop what it cannot deliver.
#[derive(ActixMessage, Debug, Clone)]
#[rtype(result = "()")]
pub struct Outbound(pub Envelope);

/// An envelope that arrived for this node, handed by the transport to the node actor.
#[derive(ActixMessage, Debug, Clone)]
#[rtype(result = "()")]
pub struct Inbound(pub Envelope);

//! The shared vocabulary: connection ids, hub names, who a call is for, who receives a send, and
//! what servers tell each other about groups and interests.
//!
//! A leaf: it imports no other module of this crate, so every layer can use it without reaching
//! upward.

mod caller;
mod ids;
mod interest;
mod message;
mod moving;
mod request;

pub use caller::Caller;
pub use ids::{ConnectionId, HubName, hub_file_stem, random_id};
pub use interest::{Interest, InterestChange};
pub use message::{Answered, Envelope, GroupChange, Question, Reply, Target};
pub use moving::{Claim, Handover, LogPos, MoveOrder, Offer};
pub use request::Request;

use ironscale_types::{NodeId, UserId};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The user as [`ironscale_types::UserRef`] displays it (`"alice"`, `id 5`).
    #[error("user {0} not found")]
    UserNotFound(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("user {name:?} still owns {nodes} node(s); delete or move them first")]
    UserHasNodes {
        name: String,
        nodes: usize,
        id: UserId,
    },
    #[error("node {} not found", .0 .0)]
    NodeNotFound(NodeId),
    #[error("pre-auth key {0:?} not found")]
    KeyNotFound(String),
    #[error("registration {0:?} not found (it may have expired)")]
    RegistrationNotFound(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("IP allocation failed: {0}")]
    Ipam(#[from] ironscale_ipam::IpamError),
    #[error("storage: {0}")]
    Store(#[from] ironscale_store::StoreError),
}

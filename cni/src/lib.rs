//! weft-cni: the CNI plugin of weft. See `main.rs` for the commands and the
//! README's weft-cni section for the configuration.
pub mod add;
pub mod check;
pub mod config;
pub mod del;
pub mod endpoint;
pub mod env;
pub mod error;
pub mod gc;
pub mod ipam;
pub mod link;
pub mod naming;
pub mod result;
pub mod status;
pub mod subnet_env;
pub mod version;

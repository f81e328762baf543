//! The generated types and tonic service of `proto/chorus/cluster/v1`.
//! This is the only crate with a build script.

#![allow(missing_docs, clippy::all)]

/// `chorus.cluster.v1`.
pub mod v1 {
    tonic::include_proto!("chorus.cluster.v1");
}

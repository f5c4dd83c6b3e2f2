//! Commands that work on files rather than on a running member (etcdutl's side of etcd):
//! `kvnode snapshot status|restore`.

pub mod progress;
pub mod snapshot;

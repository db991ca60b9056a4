//! phoenixctl: etcdctl's commands and output against Phoenix or etcd.

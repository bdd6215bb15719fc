"""Shared pytest configuration: the local-environment fixtures (kube-apiserver, etcd, Prometheus)."""

pytest_plugins = ["modelrollout.localenv.pytest_plugin"]

"""The dev stack: what tests and the demo run, never the operator's pod.

* :mod:`~modelrollout.devstack.controlplane`: a local control plane (kube-apiserver, etcd and
  kube-controller-manager built from their Go modules, a real Prometheus, the upstream CRDs), run
  on loopback by ``modelrollout localenv`` and the pytest fixtures;
* :mod:`~modelrollout.devstack.sim`: simulated model servers, the mesh stand-in that routes by the
  VirtualService or HTTPRoute, the load generator, and the e2e ``World``;
* :mod:`~modelrollout.devstack.demo`: ``modelrollout demo``, the scenarios on that stack.

An import contract keeps it out of ``controller``, ``policy``, ``metrics``, ``routing``, ``api`` and
``stats``.
"""

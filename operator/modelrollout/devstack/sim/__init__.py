"""The simulated e2e stack: model servers, the mesh stand-in (for Envoy) and a load generator.

Each component is a process of its own, bound to 127.0.0.1:

* :mod:`modelrollout.devstack.sim.model_server` -- ``/predict`` of one variant with a configurable error
  rate, latency and outcome (click, revenue) distribution; outcome counters by variant.
* :mod:`modelrollout.devstack.sim.mesh` -- routes by the live VirtualService or HTTPRoute, mirrors, honours
  the bucket header, and exports Istio's standard metrics (a stand-in for Envoy).
* :mod:`modelrollout.devstack.sim.loadgen` -- simulated users with stable ids, bounded in count and time.
* :mod:`modelrollout.devstack.sim.stack` -- starts and stops them (tests and ``modelrollout demo``).

Time is compressed: Prometheus scrapes every second and the load runs at hundreds of requests
per second, so a whole experiment takes minutes. ``python -m modelrollout.devstack.sim <component> ...``
runs one component (``model``, ``mesh`` or ``load``).
"""

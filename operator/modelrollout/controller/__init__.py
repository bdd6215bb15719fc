"""The operator process: kopf's handlers and one tick of the control loop.

* :mod:`~modelrollout.controller.config`: one :class:`OperatorConfig`, built from the flags and
  the environment by ``modelrollout run``;
* :mod:`~modelrollout.controller.runtime`: the composition root, made once at startup and kept in
  kopf's memo (the API clients, the shared Prometheus providers, the router factory);
* :mod:`~modelrollout.controller.handlers`: the kopf decorators, each one line into the tick;
* :mod:`~modelrollout.controller.tick`: observe, decide, apply the routes, write the status,
  emit, in that order, against the :class:`~modelrollout.routing.Router` and
  :class:`~modelrollout.metrics.MetricsProvider` protocols and the :class:`Cluster` of
  :mod:`~modelrollout.controller.kube`;
* :mod:`~modelrollout.controller.observe`, :mod:`~modelrollout.controller.notify` and
  :mod:`~modelrollout.controller.invalid_spec`: what a tick reads, whom it tells, and what it
  says about a spec the models reject.
"""

"""Helpers shared by the test tiers. ``pythonpath = ["tests"]`` (pytest's ini options in
pyproject.toml) makes this package importable from every tier as ``support``:

- :mod:`support.policy_world`: the policy tests' spec builder, seeded simulated world and fake clock
  (``Experiment``), with Then steps that fail with a description of the run.
- :mod:`support.models`: ``fast()``, the simulated model server of the e2e scenarios.
- :mod:`support.manifests`: the table of bad manifests (``tests/data/bad_manifests/cases.yaml``)
  shared by the unit and integration tiers, and the JSON merge patch that builds its cases.
- :mod:`support.monitoring`: the chart's Grafana dashboard (every panel's PromQL, Grafana's
  variables filled in) and promtool, for the chart and e2e tests of the operator's own metrics.
"""

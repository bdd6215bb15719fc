"""Pure statistics for model experiments: numpy and scipy only, no I/O.

Inputs are aggregates, because that is what Prometheus returns: counts for proportions;
count, mean and standard deviation (or sum and sum of squares) for means; sums and cross terms
for ratio metrics. Every public function validates its input and raises
:class:`modelrollout.errors.InvalidInputError` naming the bad value. Results are frozen
dataclasses that carry the estimate, the interval, the p-value (or e-value), the method and its
reference.
"""

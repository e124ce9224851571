"""The server's federation: the round loop over any Flower Grid (:mod:`~perfedavg.federation.loop`), how per-client
state travels (:mod:`~perfedavg.federation.state_records`), stop signals (:mod:`~perfedavg.federation.stopping`),
TensorBoard (:mod:`~perfedavg.federation.tracking`) and the exact mode's round-time estimate
(:mod:`~perfedavg.federation.step_estimate`). No client math: that is :mod:`perfedavg.algorithms`."""


class FederationError(RuntimeError):
    """The federation cannot go on (e.g. every sampled client failed in a round, or the run diverged)."""

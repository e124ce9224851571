"""Where clients run: Flower's ClientApp and ServerApp (:mod:`~perfedavg.engines.client_app`,
:mod:`~perfedavg.engines.server_app`), the event-driven message hand-off on Flower's simulation engine
(:mod:`~perfedavg.engines.sim_engine`) and the in-process grid (:mod:`~perfedavg.engines.inprocess_grid`). No round
loop here: that is :mod:`perfedavg.federation`."""

"""What tests, benchmarks and a user's rehearsals drive perfedavg with, shipped with the package so that none of them
imports a script by path: fault injection into a run's clients (:mod:`.faults`) and the plain training loop the speed
benchmark compares perfedavg against (:mod:`.plain_loop`). Nothing in the package proper imports this."""

"""Calibration: learning the agents' utility parameters (CES shares and sigma) from data.

* :mod:`.observations` — the data: prices and chosen bundles per observation, read from
  the long table ``tatonnet calibrate`` takes, validated (one-line errors);
* :mod:`.parameters` — shares on the simplex by log-ratios, ``sigma > 0`` by ``log sigma``;
* :mod:`.demand_fit` — mode ``demand``: least squares on the demand system with the
  analytic parameter Jacobian (:func:`tatonnet.agents.jacobian.demand_parameter_jacobian`);
* :mod:`.identification` — which parameters the data pin down (never-bought goods, flat
  directions of the Jacobian) and the standard errors;
* :mod:`.path_fit` — mode ``path``: least squares on an observed tâtonnement price path;
* :mod:`.baseline` — black-box search (random or Optuna) on the same evaluation budget;
* :mod:`.synthetic` — data drawn from known parameters, for known-answer tests and examples.

See docs/11-calibration.md.
"""

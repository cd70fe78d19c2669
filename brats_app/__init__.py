"""The application layer: the ``brats`` command, its train / predict / evaluate / compare / serve commands and
the model registry (:mod:`brats_app.registry`). It stands above the model packages, which stand on
:mod:`brats_core`; the API and the UI read the registry from here."""

"""The monitoring tests reuse the A/B tests' model store, models and in-process exchange."""

from tests.experiments.conftest import models_settings, store  # noqa: F401 - fixtures

"""Fixtures of the analytics tests: the training tests run on a demo world loaded by the demo's fixture."""

from tests.demo.conftest import demo_world

__all__ = ["demo_world"]

"""Offline checks of the deployment files (Dockerfile, docker-compose.yml) and the health probe."""

import pytest

# The helpers assert on the files; let pytest explain their failures like a test's own asserts.
pytest.register_assert_rewrite("tests.deploy.deployfiles")

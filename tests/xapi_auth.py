"""The HTTP Basic header for an LRS credential, shared by test modules.

A module of its own (importable because pytest puts ``tests/`` on sys.path for the root
conftest): ``from conftest import ...`` breaks as soon as another directory has a
conftest.py, since both are named ``conftest``.
"""

import base64


def basic_auth(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()

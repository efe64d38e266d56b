"""Mastery Hub's composition root: settings, the embedded database, the app factory and CLI.

The three product packages stay independent (``lti_tool`` -> ``mappings`` -> ``lrs``); this
package is the only place that knows all of them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("masteryhub")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

"""Demo data for `make run`: the sample framework and its rules, so a newcomer sees
something on first start. Development only, and only into an empty database."""

from __future__ import annotations

import logging
from importlib import resources

log = logging.getLogger(__name__)


def seed_if_empty() -> bool:
    """Import the sample framework and rules when no framework exists; True if it did."""
    from mappings import catalog as catalog_module
    from mappings.frameworks import sample_framework, save_framework
    from mappings.models import Framework, RuleSet, ensure_indexes
    from mappings.rules import load_ruleset

    ensure_indexes()
    if Framework.objects.first() is not None:
        return False
    save_framework(sample_framework())
    text = resources.files("mappings.data").joinpath("sample_rules.yaml").read_text("utf-8")
    ruleset = load_ruleset(text, filename="sample_rules.yaml",
                           competencies=catalog_module.load().infos)
    RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
    catalog_module.bump()
    log.info("demo data: imported the sample framework and rules")
    return True

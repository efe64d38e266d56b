"""Admin commands for the competency engine: frameworks, rules, learners, evidence review,
explanations, the worker and recompute.

Like ``lrs.cli``, commands get the database from the composition root through
``ctx.obj["database"]``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from mappings import catalog as catalog_module


def _db(ctx: click.Context):
    return ctx.find_root().obj["database"]()


def print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table for people at a terminal; tab-separated lines for scripts and pipes."""
    if sys.stdout.isatty():
        table = Table(*headers)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    else:
        for row in rows:
            click.echo("\t".join(row))


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value, default=str, indent=2))


# -- frameworks ---------------------------------------------------------------------------
@click.group()
def frameworks() -> None:
    """Competency frameworks: import CASE packages or YAML, export CASE, list."""


@frameworks.command("import")
@click.argument("source")
@click.option("--token", help="Bearer token for a CASE server URL.")
@click.option("--scale", help="Scale for a CASE package: four-level or performance-levels.")
@click.pass_context
def frameworks_import(ctx: click.Context, source: str, token: str | None,
                      scale: str | None) -> None:
    """Import SOURCE: a CASE CFPackage JSON file, a CASE server URL
    (.../ims/case/v1p0|v1p1/CFPackages/ID), a YAML framework file, or 'sample'."""
    from mappings import frameworks as fw

    try:
        if source == "sample":
            imported = fw.sample_framework()
        elif source.startswith(("http://", "https://")):
            imported = fw.parse_case_package(fw.fetch_case_package(source, token=token),
                                             source=source, scale=scale)
        else:
            path = Path(source)
            if not path.is_file():
                raise click.BadParameter(f"no such file: {source}", param_hint="SOURCE")
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() in (".yaml", ".yml"):
                imported = fw.parse_yaml_framework(text, filename=source)
            else:
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise fw.FrameworkError(f"{source}: not JSON ({exc})") from None
                imported = fw.parse_case_package(data, source=source, scale=scale)
        with _db(ctx):
            saved = fw.save_framework(imported)
    except fw.FrameworkError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Imported {saved.title!r} ({saved.identifier}): "
               f"{len(imported.competencies)} competencies, "
               f"{len(imported.credit_rules)} credit rule(s).")
    for warning in imported.warnings:
        click.echo(f"  warning: {warning}", err=True)


@frameworks.command("export")
@click.argument("framework_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File (default: stdout).")
@click.pass_context
def frameworks_export(ctx: click.Context, framework_id: str, output: str | None) -> None:
    """Export a framework as a CASE 1.1 CFPackage."""
    from mappings import frameworks as fw

    with _db(ctx):
        try:
            package = fw.export_case(framework_id)
        except fw.FrameworkError as exc:
            raise click.ClickException(str(exc)) from None
    text = json.dumps(package, indent=2, default=str)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        click.echo(f"Wrote {output}")
    else:
        click.echo(text)


@frameworks.command("list")
@click.pass_context
def frameworks_list(ctx: click.Context) -> None:
    """List frameworks with their competency counts."""
    from mappings.models import Competency, Framework

    with _db(ctx):
        rows = [(f.identifier, f.title, f.source,
                 str(Competency.objects(framework=f.identifier).count()), f.calculation,
                 f.scale.name) for f in Framework.objects.order_by("title")]
    print_table(("id", "title", "source", "competencies", "calculation", "scale"), rows)


# -- rules ----------------------------------------------------------------------------------
@click.group()
def rules() -> None:
    """Mapping rules: YAML files that turn statements into competency evidence."""


def _infos() -> dict:
    return catalog_module.load().infos


@rules.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def rules_load(ctx: click.Context, file: str) -> None:
    """Validate FILE against the imported competencies and store it (replacing a rule set
    of the same name). Running workers pick it up on their next batch."""
    from mappings.models import RuleSet
    from mappings.rules import RuleError, load_ruleset

    text = Path(file).read_text(encoding="utf-8")
    with _db(ctx):
        try:
            ruleset = load_ruleset(text, filename=file, competencies=_infos())
        except RuleError as exc:
            raise click.ClickException(str(exc)) from None
        RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
        catalog_module.bump()
    click.echo(f"Loaded rule set {ruleset.name!r}: {len(ruleset.rules)} rule(s).")


@rules.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def rules_validate(ctx: click.Context, file: str) -> None:
    """Check FILE without storing it (against the imported competencies)."""
    from mappings.rules import RuleError, load_ruleset

    text = Path(file).read_text(encoding="utf-8")
    with _db(ctx):
        try:
            ruleset = load_ruleset(text, filename=file, competencies=_infos())
        except RuleError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{file}: valid ({len(ruleset.rules)} rule(s)).")


@rules.command("list")
@click.pass_context
def rules_list(ctx: click.Context) -> None:
    """List stored rule sets."""
    from mappings.models import RuleSet

    with _db(ctx):
        for r in RuleSet.objects.order_by("name"):
            click.echo(f"{r.name}: {len(r.rules)} rule(s), loaded {r.loaded_at:%Y-%m-%d %H:%M}")


@rules.command("remove")
@click.argument("name")
@click.pass_context
def rules_remove(ctx: click.Context, name: str) -> None:
    """Remove a rule set. New statements no longer match it; the worker maps the stored
    statements again, and evidence only it produced is marked superseded (kept, not
    counted)."""
    from mappings.models import RuleSet

    with _db(ctx):
        found = RuleSet.objects(name=name).first()
        if found is None:
            raise click.ClickException(f"no rule set {name!r}")
        found.delete()
        catalog_module.bump()
    click.echo(f"Removed rule set {name!r}.")


@rules.command("test")
@click.argument("statement_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--rules-file", "rule_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Try these rule files instead of the stored rule sets.")
@click.option("--provider", help="The credential key the statement would come from.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rules_test(ctx: click.Context, statement_file: str, rule_files: tuple[str, ...],
               provider: str | None, as_json: bool) -> None:
    """Show which rules match a statement and the evidence it would produce, without
    storing anything."""
    from lrs.errors import XAPIValidationError
    from lrs.validation import validate_statement
    from mappings.rules import RuleError, explain_statement, load_ruleset

    try:
        stmt = json.loads(Path(statement_file).read_text(encoding="utf-8"))
        validate_statement(stmt)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{statement_file}: not JSON ({exc})") from None
    except XAPIValidationError as exc:
        raise click.ClickException(f"{statement_file}: not a valid statement: {exc}") from None
    with _db(ctx):
        catalog = catalog_module.load()
        try:
            rulesets = ([load_ruleset(Path(f).read_text(encoding="utf-8"), filename=f,
                                      competencies=catalog.infos) for f in rule_files]
                        if rule_files else catalog.rulesets)
        except RuleError as exc:
            raise click.ClickException(str(exc)) from None
        explanation = explain_statement(stmt, rulesets, catalog.infos, provider=provider)
    if as_json:
        _echo_json([{"competency": d.competency, "rule": d.rule, "points": d.points,
                     "source_type": d.source_type, "review": d.review}
                    for d in explanation.drafts])
    else:
        click.echo(explanation.format())


# -- learners -------------------------------------------------------------------------------
@click.group()
def learners() -> None:
    """Learners and their xAPI identities."""


@learners.command("list")
@click.pass_context
def learners_list(ctx: click.Context) -> None:
    from mappings.models import Learner

    with _db(ctx):
        for learner in Learner.objects.order_by("identifier"):
            click.echo(f"{learner.identifier}  {learner.name or ''}  {', '.join(learner.agents)}")


@learners.command("link")
@click.argument("learner_id")
@click.argument("agent")
@click.pass_context
def learners_link(ctx: click.Context, learner_id: str, agent: str) -> None:
    """Link AGENT (an xAPI Agent as JSON, or mailto:ADDRESS) to LEARNER_ID; a learner who
    had that identity is merged in, and their mastery is recomputed."""
    from lrs.errors import XAPIValidationError
    from lrs.keys import ifi
    from lrs.validation import validate_agent
    from mappings.identity import link

    try:
        agent_obj = {"mbox": agent} if agent.startswith("mailto:") else json.loads(agent)
        validate_agent(agent_obj, "agent", allow_group=False)
    except (json.JSONDecodeError, XAPIValidationError) as exc:
        raise click.BadParameter(f"not an xAPI agent: {exc}", param_hint="AGENT") from None
    with _db(ctx) as db:
        try:
            learner, merged = link(learner_id, ifi(agent_obj))
        except KeyError as exc:
            raise click.ClickException(str(exc.args[0])) from None
        if merged:
            from mappings.identity import move_evidence

            moved = move_evidence(db, merged, learner.identifier)
            click.echo(f"Merged learner {merged} into {learner.identifier} "
                       f"({moved} evidence record(s) moved).")
    click.echo(f"{learner.identifier}: {', '.join(learner.agents)}")


# -- evidence, explain ----------------------------------------------------------------------
@click.group()
def evidence() -> None:
    """Evidence waiting for a teacher, and decisions on it."""


@evidence.command("pending")
@click.option("--framework")
@click.pass_context
def evidence_pending(ctx: click.Context, framework: str | None) -> None:
    from mappings import evidence as evidence_store

    with _db(ctx) as db:
        waiting = [e for e in evidence_store.pending(db, [framework] if framework else None)
                   if e.get("voided") is False]
        waiting.sort(key=lambda e: (e["timestamp"], e["_id"]))
        for e in waiting[:500]:
            click.echo(f"{e['_id']}  {e['learner']}  {e['competency']}  "
                       f"{e['points']}  {e['source_type']}  {e['timestamp']:%Y-%m-%d}")


@evidence.command("review")
@click.argument("evidence_id")
@click.argument("action", type=click.Choice(["approve", "reject", "override"]))
@click.option("--by", required=True, help="Who decides (recorded).")
@click.option("--comment")
@click.option("--points", type=float, help="The rating, for override.")
@click.pass_context
def evidence_review(ctx: click.Context, evidence_id: str, action: str, by: str,
                    comment: str | None, points: float | None) -> None:
    from mappings.review import ReviewError, decide

    with _db(ctx) as db:
        try:
            updated = decide(db, evidence_id, action, by=by, comment=comment, points=points)
        except ReviewError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{evidence_id}: {updated['status']}")


@click.command()
@click.argument("learner_id")
@click.argument("competency")
@click.pass_context
def explain(ctx: click.Context, learner_id: str, competency: str) -> None:
    """Why LEARNER_ID has their level on COMPETENCY: the evidence and statements behind it,
    and the credits it counts toward."""
    from mappings.review import explain as explain_chain

    with _db(ctx) as db:
        _echo_json(explain_chain(db, learner_id, competency))


# -- worker, recompute ----------------------------------------------------------------------
@click.command()
@click.option("--poll", default=0.1, show_default=True, help="Seconds between polls when idle.")
@click.pass_context
def worker(ctx: click.Context, poll: float) -> None:
    """Run the mapping worker alone (for scale-out; set MASTERYHUB_WORKER=off on the web
    processes). Several may run: one holds the lease, the others stand by."""
    from mappings.worker import Worker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _db(ctx) as db:
        w = Worker(db)
        click.echo(f"Mapping worker {w.name} running. Press Ctrl-C to stop.")
        try:
            w.run_forever(stop, poll=poll)
        except KeyboardInterrupt:
            stop.set()
            w.release()
    click.echo("Worker stopped.")


@click.command()
@click.option("--learner", help="Only this learner's mastery.")
@click.option("--framework", help="Only this framework's mastery.")
@click.pass_context
def recompute(ctx: click.Context, learner: str | None, framework: str | None) -> None:
    """Rebuild evidence, mastery and credits from the stored statements (same results as
    the worker). Safe to interrupt: each learner keeps either their old records or their
    new ones, and running it again (or the running worker) finishes the job."""
    from mappings.worker import LeaseLost
    from mappings.worker import recompute as run

    with _db(ctx) as db, Progress("[progress.description]{task.description}", BarColumn(),
                                  MofNCompleteColumn(), TimeRemainingColumn(),
                                  disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("statements", total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        try:
            count = run(db, learner=learner, framework=framework, progress=progress)
        except LeaseLost as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"Recomputed from {count} statement(s).")


COMMANDS = (frameworks, rules, learners, evidence, explain, worker, recompute)

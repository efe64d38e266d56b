"""``masteryhub grades sync`` and ``masteryhub roster sync``: one LMS sync pass on demand,
and the grade sync running beside ``masteryhub worker``."""

from __future__ import annotations

import contextlib
import functools
import json

import click


def _db(ctx: click.Context):
    return ctx.find_root().obj["database"]()


def _sync(db):
    from lti_tool.sync import GradeSync

    sync = GradeSync(db, name=None)
    if not sync.acquire_waiting(15):
        raise click.ClickException("another process is running the LMS sync and does not "
                                   "let go; try again in a minute")
    return sync


@click.group()
def grades() -> None:
    """Grades to the LMS gradebooks (LTI Assignment and Grade Services)."""


@grades.command("sync")
@click.option("--course", help="Only this course (Course id \"platform|context\"): every "
                               "member's scores are checked again, ignoring retry delays.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def grades_sync(ctx: click.Context, course: str | None, as_json: bool) -> None:
    """Run one sync pass now and print what was posted and what failed."""
    from lti_tool import grades as grades_module
    from lti_tool.services import ServiceError
    from mappings.models import utcnow

    with _db(ctx) as db:
        sync = _sync(db)
        try:
            if course:
                try:
                    grades_module.requeue_course(db, course, utcnow(), sync.catalog())
                except ServiceError as exc:
                    raise click.ClickException(str(exc)) from None
            result = sync.run_once(course=course)
        finally:
            sync.release()
    assert result is not None
    if as_json:
        click.echo(json.dumps({
            "queued": result.queued, "unchanged": result.unchanged,
            "posted": [{"course": c, "user": u, "resource": r, "score": v}
                       for c, u, r, v in result.posted],
            "failed": [{"course": c, "error": e} for c, e in result.failed],
            "failed_items": [{"course": c, "user": u, "resource": r, "error": e}
                             for c, u, r, e in result.item_failures],
            "rosters": [r.as_dict() for r in result.rosters]}, indent=2))
    else:
        for c, u, r, v in result.posted:
            given = v.get("scoreGiven")
            score = f"{given:g}/{v['scoreMaximum']:g}" if given is not None else "no score"
            click.echo(f"posted  {c}  {u.split('|', 1)[-1]}  {r}  {score}  "
                       f"{v['activityProgress']}/{v['gradingProgress']}")
        for c, e in result.failed:
            click.echo(f"FAILED  {c}: {e}")
        for c, u, r, e in result.item_failures:
            click.echo(f"FAILED  {c}  {u.split('|', 1)[-1]}  {r}: {e}")
        for r in result.rosters:
            click.echo(f"roster  {r.course}: {r.members} member(s), {r.inactive} now inactive")
        click.echo(f"{len(result.posted)} score(s) posted, {result.unchanged} unchanged, "
                   f"{len(result.failed) + len(result.item_failures)} failure(s).")
    if result.failed or result.item_failures:
        ctx.exit(1)


@click.group()
def roster() -> None:
    """Course rosters from the LMS (LTI Names and Role Provisioning Services)."""


@roster.command("sync")
@click.argument("course")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def roster_sync(ctx: click.Context, course: str, as_json: bool) -> None:
    """Import COURSE's roster now (Course id "platform|context")."""
    from lti_tool.roster import import_roster
    from lti_tool.services import ServiceError

    with _db(ctx) as db:
        try:
            result = import_roster(course, db=db)
        except ServiceError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(f"{course}: {result.members} member(s) ({result.learners} learner(s), "
                   f"{result.new} new), {result.inactive} marked inactive.")


COMMANDS = (grades, roster)


def alongside_worker(command: click.Command) -> click.Command:
    """Make ``masteryhub worker`` run the LMS sync loop in a thread next to the mapping
    worker (composed here, so the mapper itself never imports the LTI tool)."""
    original = command.callback
    assert original is not None

    @functools.wraps(original)
    def callback(*args, **kwargs):
        root = click.get_current_context().find_root()
        open_database = root.obj["database"]

        @contextlib.contextmanager
        def database():
            from lti_tool.sync import start_thread

            with open_database() as db:
                thread, stop = start_thread(lambda: db)
                click.echo("LMS sync (grades, rosters) running beside the worker.")
                try:
                    yield db
                finally:
                    stop.set()
                    thread.join(10)

        root.obj = dict(root.obj, database=database)
        return original(*args, **kwargs)

    command.callback = callback
    return command

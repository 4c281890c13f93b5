"""An issue's revision: every save of its content counts one up, and a save based on an older revision
is refused, whoever made the newer one (another tab, another editor, the API, the CLI).

On SQLite and PostgreSQL: the domain function, two saves racing in two transactions, the admin UI's
autosave and Save, and the API's ``revision`` field.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from newsletter.content.issue_files import IssueSource, parse_issue_text
from newsletter.content.issues import StaleRevision, create_issue, get_issue, update_issue
from newsletter.errors import RenderError
from newsletter.store import db
from newsletter.store.models import Issue
from subscribers.lists import create_list
from tests.apikit import api, assert_error  # noqa: F401  (fixture)
from tests.bouncekit import RENDER
from tests.test_admin_ui import SAMPLE_ISSUE, admin, csrf_of, make_issue  # noqa: F401  (fixture)


def _source(body: str, subject: str = "Revisions") -> IssueSource:
    return IssueSource(subject=subject, preheader="", template="issue", body_markdown=body, source="test")


def _stored(sessions, issue_id: int) -> tuple[int, str]:
    with sessions() as s:
        row = s.execute(select(Issue.revision, Issue.body_markdown).where(Issue.id == issue_id)).one()
        return row[0], row[1]


@pytest.fixture
def issue_id(sessions) -> int:
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="The Weekly", from_email="news@example.org")
        issue, _ = create_issue(s, "weekly", _source("First text."), RENDER)
        assert issue.revision == 1
        return issue.id


def test_each_save_counts_one_up_and_a_stale_one_is_refused(sessions, issue_id):
    with db.transaction(sessions) as s:
        issue, _ = update_issue(s, issue_id, _source("Tab A's text."), RENDER, revision=1)
        assert issue.revision == 2 and issue.body_markdown == "Tab A's text."
    with pytest.raises(StaleRevision) as refused, db.transaction(sessions) as s:
        update_issue(s, issue_id, _source("Tab B's text."), RENDER, revision=1)
    assert (refused.value.based_on, refused.value.current) == (1, 2)
    assert refused.value.changed_at.tzinfo is not None
    assert abs((datetime.now(UTC) - refused.value.changed_at).total_seconds()) < 3600
    assert "was changed at" in str(refused.value) and "nothing was saved" in str(refused.value)
    assert _stored(sessions, issue_id) == (2, "Tab A's text.")  # tab A's save intact

    with db.transaction(sessions) as s:  # based on the stored revision: saved
        update_issue(s, issue_id, _source("Tab B, after reloading."), RENDER, revision=2)
    with db.transaction(sessions) as s:  # no revision named (the CLI's `issues update`): saved, counted
        update_issue(s, issue_id, _source("From the CLI."), RENDER)
    assert _stored(sessions, issue_id) == (4, "From the CLI.")
    with pytest.raises(StaleRevision), db.transaction(sessions) as s:  # a revision from the future is no better
        update_issue(s, issue_id, _source("Forged."), RENDER, revision=99)
    with pytest.raises(RenderError), db.transaction(sessions) as s:  # refused content counts nothing
        update_issue(s, issue_id, _source("[relative](/x)"), RENDER, revision=4)
    assert _stored(sessions, issue_id) == (4, "From the CLI.")


def test_a_status_change_is_not_a_new_revision(sessions, issue_id):
    from newsletter.store.states import IssueStatus

    with db.transaction(sessions) as s:
        issue, _ = get_issue(s, issue_id)
        issue.status = IssueStatus.READY
    with db.transaction(sessions) as s:
        update_issue(s, issue_id, _source("Still based on 1."), RENDER, revision=1)
    assert _stored(sessions, issue_id) == (2, "Still based on 1.")


def test_two_saves_based_on_one_revision_racing_one_wins(sessions, issue_id, database_url):
    """Tab B's save runs while tab A's is written but not committed: B waits for A, then is refused."""
    first = sessions()
    first.begin()
    update_issue(first, issue_id, _source("Tab A's text."), RENDER, revision=1)  # holds the row (or the file)
    outcome: list[object] = []

    def second() -> None:
        try:
            with db.transaction(sessions) as s:
                update_issue(s, issue_id, _source("Tab B's text."), RENDER, revision=1)
            outcome.append("saved")
        except StaleRevision as exc:
            outcome.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    if database_url.startswith("postgresql"):
        # B has read revision 1 and now waits on A's row lock: the conditional UPDATE is what decides.
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        with sessions() as watcher:
            while not watcher.scalar(waiting):
                watcher.rollback()
                assert thread.is_alive(), outcome
                time.sleep(0.01)
    first.commit()
    first.close()
    thread.join(60)
    assert not thread.is_alive()
    [result] = outcome
    assert isinstance(result, StaleRevision) and result.current == 2, result
    assert _stored(sessions, issue_id) == (2, "Tab A's text.")


# --- the admin UI ----------------------------------------------------------------------------


def _page_revision(page_html: str) -> int:
    match = re.search(r'name="revision" value="(\d+)"', page_html)
    assert match, "no revision field on the page"
    return int(match.group(1))


def test_the_admin_autosave_and_save_check_the_revision(admin):  # noqa: F811
    issue_id = make_issue(admin)
    tab_a, tab_b = admin.logged_in("eddie"), admin.logged_in("eddie")
    page_a, page_b = tab_a.get(f"/admin/issues/{issue_id}").text, tab_b.get(f"/admin/issues/{issue_id}").text
    assert _page_revision(page_a) == _page_revision(page_b) == 1
    assert f'data-autosave-url="/admin/issues/{issue_id}/autosave"' in page_a
    csrf_a, csrf_b = csrf_of(page_a), csrf_of(page_b)
    text_a = SAMPLE_ISSUE.replace("Qualified Support", "Tab A Support")
    text_b = SAMPLE_ISSUE.replace("Qualified Support", "Tab B Support")
    url = f"/admin/issues/{issue_id}/autosave"

    saved = tab_a.post(url, data={"source": text_a, "revision": "1"}, headers={"X-CSRF-Token": csrf_a})
    assert saved.status_code == 200, saved.text
    answer = saved.json()
    assert answer["saved"] is True and answer["revision"] == 2 and answer["problems"] == []
    assert datetime.fromisoformat(answer["saved_at"]).tzinfo is not None

    refused = tab_b.post(url, data={"source": text_b, "revision": "1"}, headers={"X-CSRF-Token": csrf_b})
    assert refused.status_code == 409
    conflict = refused.json()
    assert conflict["saved"] is False and conflict["conflict"] is True and conflict["revision"] == 2
    assert conflict["changed_at"] == answer["saved_at"]

    def stored() -> tuple[int, str]:
        with admin.sessions() as s:
            issue = s.get(Issue, issue_id)
            assert issue is not None
            return issue.revision, issue.subject

    assert stored() == (2, "This Week in Info War: Tab A Support in Moscow for Korean Summit")

    # The form's Save obeys the same check: 409, the page keeps tab B's text and its old revision.
    form = tab_b.post(f"/admin/issues/{issue_id}", data={"csrf_token": csrf_b, "source": text_b, "revision": "1"})
    assert form.status_code == 409
    assert "This issue was changed in another tab or by someone else at" in form.text
    assert "Tab B Support in Moscow" in form.text and _page_revision(form.text) == 1
    assert 'data-state="conflict"' in form.text and "Reload the saved version" in form.text
    assert stored()[0] == 2

    # Tab A goes on: its next saves name the revision its last one returned.
    again = tab_a.post(f"/admin/issues/{issue_id}", data={"csrf_token": csrf_a, "source": text_a, "revision": "2"})
    assert again.status_code == 303 and again.headers["location"] == f"/admin/issues/{issue_id}?done=saved"
    assert _page_revision(tab_b.get(f"/admin/issues/{issue_id}").text) == 3  # reloaded: the newest revision

    # A draft that does not render is not stored, and says why with its line.
    broken = text_a.replace("(https://twitter.com/intent/tweet?", "(/intent/tweet?")
    bad = tab_a.post(url, data={"source": broken, "revision": "3"}, headers={"X-CSRF-Token": csrf_a})
    assert bad.status_code == 400 and bad.json()["saved"] is False
    assert re.match(r"line 12: .*relative link URL '/intent/tweet", bad.json()["error"]), bad.json()
    bad_form = tab_a.post(f"/admin/issues/{issue_id}", data={"csrf_token": csrf_a, "source": broken, "revision": "3"})
    assert bad_form.status_code == 400 and _page_revision(bad_form.text) == 3  # the page's, not a newer one
    missing = tab_a.post(url, data={"source": text_a}, headers={"X-CSRF-Token": csrf_a})
    assert missing.status_code == 400 and "which revision" in missing.json()["error"]
    assert stored()[0] == 3

    # Not without the CSRF token, and not for an issue that is not there.
    assert tab_a.post(url, data={"source": text_a, "revision": "3"}).status_code == 403
    gone = tab_a.post(
        "/admin/issues/999999/autosave", data={"source": text_a, "revision": "1"}, headers={"X-CSRF-Token": csrf_a}
    )
    assert gone.status_code == 404 and gone.json()["saved"] is False
    assert stored()[0] == 3


def test_the_new_issue_page_has_no_autosave_until_it_is_created(admin):  # noqa: F811
    client = admin.logged_in("eddie")
    page = client.get("/admin/issues/new?list=weekly").text
    assert "data-autosave-url" not in page and 'name="revision"' not in page
    assert "Create draft stores it, then it saves itself as you type" in page
    created = client.post(
        "/admin/issues/new", data={"csrf_token": csrf_of(page), "list": "weekly", "source": SAMPLE_ISSUE}
    )
    assert created.status_code == 303
    assert _page_revision(client.get(created.headers["location"]).text) == 1


# --- the API ---------------------------------------------------------------------------------


def test_the_api_takes_a_revision_and_refuses_a_stale_one(api):  # noqa: F811
    api.make_list()
    issue = api.make_issue()
    path = f"/api/issues/{issue['id']}"
    assert issue["revision"] == 1 and api.get(path, expect=200).json()["revision"] == 1
    first = api.put(path, json={"subject": "A", "body_markdown": "A's body.", "revision": 1}, expect=200).json()
    assert first["revision"] == 2
    assert_error(
        api.put(path, json={"subject": "B", "body_markdown": "B's body.", "revision": 1}, role="editor"),
        409,
        says="nothing was saved",
    )
    assert_error(
        api.put(f"{path}/markdown", json={"markdown": "---\nsubject: B\n---\nB's body.", "revision": 1}),
        409,
        says="revision 2",
    )
    stored = api.get(path, expect=200).json()
    assert (stored["subject"], stored["body_markdown"], stored["revision"]) == ("A", "A's body.", 2)
    from_file = api.put(f"{path}/markdown", json={"markdown": "---\nsubject: C\n---\nC.", "revision": 2}, expect=200)
    assert from_file.json()["revision"] == 3
    assert api.put(path, json={"subject": "D", "body_markdown": "D."}, expect=200).json()["revision"] == 4  # none
    assert_error(api.put(path, json={"subject": "E", "body_markdown": "E.", "revision": 0}), 422, field="revision")
    assert api.get(path, expect=200).json()["subject"] == "D"


def test_an_issue_file_round_trips_through_the_editor_text(sessions, issue_id):
    """The editor's text of an issue parses back to the same content (the autosave stores it as is)."""
    from newsletter.http.admin.issues import issue_text

    with db.transaction(sessions) as s:
        issue, _ = get_issue(s, issue_id)
        again = parse_issue_text(issue_text(issue), source="draft")
    assert (again.subject, again.body_markdown) == ("Revisions", "First text.")

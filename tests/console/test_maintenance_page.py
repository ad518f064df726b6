"""Maintenance in a real browser: Add window (weekly, and one-off active now), which are
active now, Remove; a refused window shows each field's problem."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from tests.console.conftest import Console


def test_add_windows_see_which_are_active_and_remove_one(signed_in: Console) -> None:
    page = signed_in.page
    signed_in.open("/maintenance")
    expect(page.get_by_text("No maintenance windows.")).to_be_visible()

    page.get_by_label("Destination").fill("prod")
    page.get_by_label("Weekly (UTC)").fill("someday 02:00")
    page.get_by_role("button", name="Add window").click()
    expect(page.get_by_role("alert")).to_contain_text('weekly: must look like "sun 02:00-04:00"')
    expect(page.get_by_label("Weekly (UTC)")).to_have_value("someday 02:00")  # kept to fix

    page.get_by_label("Weekly (UTC)").fill("sun 02:00-04:00")
    page.get_by_label("Window ID").fill("sunday-backups")
    page.get_by_label("Mode").select_option("hold")
    page.get_by_role("button", name="Add window").click()
    expect(page.get_by_role("status")).to_contain_text("added maintenance window sunday-backups")

    now = datetime.now(UTC).replace(microsecond=0)
    page.get_by_label("Destination").fill("prod")
    page.get_by_label("Monitors").fill("123, 124")
    page.get_by_label("Start (UTC)").fill((now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("End (UTC)").fill((now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Reason").fill("db upgrade")
    page.get_by_label("Window ID").fill("db-upgrade")
    page.get_by_role("button", name="Add window").click()
    expect(page.get_by_role("status")).to_contain_text("added maintenance window db-upgrade")

    table = page.get_by_role("table")
    active = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="db-upgrade"))
    expect(active).to_contain_text("active until")
    expect(active).to_contain_text("123, 124")
    expect(active).to_contain_text("db upgrade")
    weekly = table.get_by_role("row").filter(
        has=page.get_by_role("rowheader", name="sunday-backups"))
    expect(weekly).to_contain_text("hold")

    active.get_by_role("button", name="Remove window db-upgrade").click()
    expect(page.get_by_role("status")).to_contain_text("removed maintenance window db-upgrade")
    expect(page.get_by_role("rowheader", name="db-upgrade")).to_have_count(0)
    expect(page.get_by_role("rowheader", name="sunday-backups")).to_have_count(1)

"""The review-gating guard: ``nps-sync check`` refuses a playbook that sends a public-review link only
to some respondents (by category, score, previous answer, comment or a sentiment trigger), names the
file, the step and the site, and accepts the same link sent to every respondent."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nps_sync.cli import EX_CONFIG, main
from nps_sync.config import DEFAULT_REVIEW_SITES
from nps_sync.playbooks import load_playbooks
from nps_sync.playbooks.review_gating import check_review_gating, find_review_links
from tests.testimonials.conftest import KEYS, SHIPPED

REVIEW = "https://g.page/r/CeXaMpLe/review"
ASK = f'''
[[step]]
action = "send_email"
subject = "How did we do?"
body = """
Hi {{{{ contact.first_name }}}}, would you review us on Google? {REVIEW}
"""
'''


def playbook(folder: Path, conditions: str = "", trigger: str = 'on = "response"', step: str = ASK) -> Path:
    path = folder / "ask-review.toml"
    path.write_text(f'name = "ask-review"\n[trigger]\n{trigger}\n[conditions]\n{conditions}\n{step}')
    return path


def problems(path: Path, sites: tuple[str, ...] = DEFAULT_REVIEW_SITES) -> list[str]:
    return check_review_gating(load_playbooks([path]), sites)


@pytest.mark.parametrize(
    ("conditions", "trigger", "why"),
    [
        (
            'category = ["promoter"]',
            'on = "response"',
            "conditions.category = ['promoter'] (it reaches only promoters",
        ),
        (
            'score = "9-10"',
            'on = "response"',
            "conditions.score = '9-10' (it reaches only promoters: scores 9-10)",
        ),
        (
            "score = [10, 10]",
            'on = "response"',
            "conditions.score = '10-10' (it reaches only promoters: scores 10-10)",
        ),
        ('category = ["passive", "promoter"]', 'on = "response"', "only some respondents: scores 7-10"),
        ('previous_category = ["promoter"]', 'on = "response"', "conditions.previous_category"),
        ('comment_contains = ["love"]', 'on = "response"', "conditions.comment_contains"),
        ("", 'on = "category_changed"\nto = ["promoter"]', "trigger.on = 'category_changed'"),
    ],
)
def test_a_review_link_to_part_of_the_respondents_is_refused(
    tmp_path: Path, conditions: str, trigger: str, why: str
) -> None:
    path = playbook(tmp_path, conditions, trigger)
    [problem] = problems(path)
    assert problem.startswith(f"{path}: step[0] (send_email): links to the public review site 'g.page'")
    assert REVIEW in problem and why in problem
    assert "Google's review policy (since 2018)" in problem and "UK and US consumer-review rules" in problem


@pytest.mark.parametrize(
    ("conditions", "trigger"),
    [
        ("", 'on = "response"'),
        ('category = ["detractor", "passive", "promoter"]', 'on = "response"'),
        ('score = "0-10"\nprograms = ["relationship"]', 'on = "response"'),
        ('[[conditions.field]]\nfield = "plan"\nvalue = "enterprise"', 'on = "response"'),
        ("", 'on = "no_response"\nafter = "3d"'),
    ],
)
def test_the_same_link_to_every_respondent_is_accepted(tmp_path: Path, conditions: str, trigger: str) -> None:
    assert [] == problems(playbook(tmp_path, conditions, trigger))


def test_sms_steps_and_links_built_in_the_template_are_found(tmp_path: Path) -> None:
    step = """
[[step]]
action = "send_sms"
body = "Review us: https://{{ 'www.g2' }}.com/products/acme/reviews"
"""
    [problem] = problems(playbook(tmp_path, 'category = ["promoter"]', step=step))
    assert (
        "step[0] (send_sms)" in problem and "'g2.com' (https://www.g2.com/products/acme/reviews)" in problem
    )


def test_a_review_link_in_a_task_for_the_account_manager_is_not_a_request_to_the_customer(
    tmp_path: Path,
) -> None:
    step = f"""
[[step]]
action = "crm_task"
subject = "Thank {{{{ contact.name }}}}; our Google page: {REVIEW}"
"""
    assert [] == problems(playbook(tmp_path, 'category = ["promoter"]', step=step))


def test_sites_match_by_host_and_path_not_by_substring() -> None:
    sites = ("google.com/maps", "g2.com")
    assert ["google.com/maps"] == [
        link.site for link in find_review_links("see https://www.google.com/maps/place/Acme", sites)
    ]
    assert [] == find_review_links("https://www.google.com/mapsearch https://notg2.com/x", sites)
    assert ["g2.com"] == [link.site for link in find_review_links("g2.com/products/acme", sites)]


def test_review_sites_are_configurable(tmp_path: Path) -> None:
    step = ASK.replace(REVIEW, "https://reviews.example.org/acme")
    path = playbook(tmp_path, 'category = ["promoter"]', step=step)
    assert [] == problems(path)
    [problem] = problems(path, ("reviews.example.org",))
    assert "'reviews.example.org'" in problem


def test_the_shipped_playbooks_pass_the_guard() -> None:
    assert [] == check_review_gating(load_playbooks(sorted(SHIPPED.glob("*.toml"))), DEFAULT_REVIEW_SITES)


def test_nps_sync_check_refuses_a_gated_playbook_naming_file_step_and_site(tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    path = playbook(folder, 'category = ["promoter"]')
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\nstate_dir = "state"\nplaybooks = ["playbooks/*.toml"]\n')
    runner = CliRunner()
    refused = runner.invoke(main, ["check", "--config", str(config)], env={"NPS_SYNC_SIGNING_KEYS": KEYS})
    assert EX_CONFIG == refused.exit_code
    text = " ".join(refused.output.split())
    assert f"{path}: step[0] (send_email): links to the public review site 'g.page'" in text
    assert "review gating" in text

    playbook(folder, "")
    accepted = runner.invoke(main, ["check", "--config", str(config)], env={"NPS_SYNC_SIGNING_KEYS": KEYS})
    assert 0 == accepted.exit_code, accepted.output

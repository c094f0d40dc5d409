""".ci/snakemake_lint.py: parsing `snakemake --lint` output and the allow-list (the lint run itself is `make lint`)."""
from __future__ import annotations

import pytest

from tests.script_module import load_script
from tests.snakemake_runner import REPO

lint = load_script(REPO / ".ci" / "snakemake_lint.py")

OUTPUT = f"""Using workflow specific profile profiles/default for setting default command line arguments.
Lints for snakefile {REPO}/rules/stego.smk:
    * Absolute path "/maps" in line 27:
      Do not define absolute paths inside of the workflow, since this renders
    * Mixed rules and functions in same snakefile.:
      Small one-liner functions used only once should be defined as lambda

Lints for rule embed (line 12, {REPO}/rules/embed.smk):
    * Specify a conda environment or container for each rule.:
      This way, the used software for each specific step is documented, and the
    * No log directive defined:
      Without a log directive, all output will be printed
"""


def test_lints_are_read_per_rule_and_snakefile_without_line_numbers():
    assert lint.parse_lints(OUTPUT) == [
        lint.Lint("snakefile rules/stego.smk", 'Absolute path "/maps"'),
        lint.Lint("snakefile rules/stego.smk", "Mixed rules and functions in same snakefile."),
        lint.Lint("rule embed", "Specify a conda environment or container for each rule."),
        lint.Lint("rule embed", "No log directive defined"),
    ]


def test_unallowed_lints_and_stale_entries_are_reported():
    allowed = lint.parse_allow("# comment\n\n"
                               "rule * | Specify a conda environment* | one environment\n"
                               "snakefile rules/*.smk | Mixed rules and functions in same snakefile. | helpers\n"
                               "snakefile rules/stego.smk | Absolute path \"/maps\" | a suffix\n"
                               "rule gone | No log directive defined | stale\n")
    bad, unused = lint.check(lint.parse_lints(OUTPUT), allowed)
    assert bad == [lint.Lint("rule embed", "No log directive defined")]  # `rule gone` does not match `embed`
    assert [a.where for a in unused] == ["rule gone"]


@pytest.mark.parametrize("line", ["rule * | no reason", "rule * | title | ", "rule *|title|reason"])
def test_an_entry_needs_where_title_and_reason(line):
    with pytest.raises(ValueError, match="expected"):
        lint.parse_allow(line)


def test_the_committed_allow_list_parses_and_gives_a_reason_each():
    entries = lint.parse_allow(lint.ALLOW.read_text())
    assert entries and all(len(e.reason) > 20 for e in entries)

"""`--json` on a pipe: one document, its top-level keys and the items of a top-level list one to
a line, written by json's C encoder (app.commands._common.print_json)."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from app.commands._common import json_lines, print_json

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_json_lines_is_the_same_document(doc):
    assert json.loads(json_lines(doc)) == doc


def test_a_piped_document_has_a_line_per_key_and_per_top_level_item(capsys):
    doc = {"image": {"path": "a\nb", "bytes": 1}, "vdis": [{"key": 1}, {"key": 2}], "none": []}
    print_json(doc)
    out = capsys.readouterr().out
    assert json.loads(out) == doc
    assert out.splitlines() == ['{', ' "image": {"path": "a\\nb", "bytes": 1},', ' "vdis": [',
                                '  {"key": 1},', '  {"key": 2}', ' ],', ' "none": []', '}']

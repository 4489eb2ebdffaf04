"""The /predict multipart reader's header parameters, against python-multipart's parser."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from python_multipart.multipart import parse_options_header

from app.multipart import parameters, parse_multipart


@pytest.mark.parametrize(
    "value",
    [
        b"multipart/form-data; boundary=abc",
        b'multipart/form-data; boundary="a b;c"',
        b'form-data; name="file"; filename="x.png"',
        b'form-data;name=files;filename="a\\"b"',
        b'form-data; NAME="x"',
        b"form-data",
        b'multipart/form-data; boundary=""',
        b'form-data; name="f" ; filename=x',
    ],
)
def test_parameters_are_those_python_multipart_reads(value):
    assert parameters(value) == parse_options_header(value)[1]


quoted_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@given(name=st.sampled_from(["name", "filename", "boundary"]), value=quoted_text)
@example(name="name", value="\\")  # an escaped backslash before the closing quote
@example(name="filename", value='a "quoted" name')
def test_quoted_values_come_back_unquoted(name, value):
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    header = f'form-data; {name}="{escaped}"; other=1'.encode()
    assert parameters(header) == {name.encode(): value.encode(), b"other": b"1"}
    if "\\" not in value:  # python-multipart takes `"\\"` for an escaped quote
        assert parameters(header) == parse_options_header(header)[1]


def test_a_body_parses_with_a_quoted_boundary():
    body = b'--a;b\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n5\r\n--a;b--\r\n'
    assert parse_multipart(body, 'multipart/form-data; boundary="a;b"', 2) == [("top_k", b"5")]

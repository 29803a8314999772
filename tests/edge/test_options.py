from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdn_common.errors import HTTPError
from edge.options import (
    FITS,
    IDENTITY,
    MAX_DIMENSION,
    BadOption,
    TransformSpec,
    parse_options,
)
from edge.routes import parse_request


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("_", IDENTITY),
        ("width=400", TransformSpec(width=400)),
        ("w=400,h=300,fit=cover", TransformSpec(width=400, height=300, fit="cover")),
        ("g=auto,fit=crop,w=10,h=10", TransformSpec(10, 10, "crop", "auto")),
        ("gravity=0.25x0.75,w=5", TransformSpec(width=5, gravity=(0.25, 0.75))),
        ("q=high,f=webp", TransformSpec(format="webp", quality=90)),
        ("quality=low", TransformSpec(quality=50)),
        ("background=%23fff", None),
        ("background=red,fit=pad,w=1,h=1", TransformSpec(1, 1, "pad", background=(255, 0, 0, 255))),
        ("background=rgba(0,0,255,0.5)", TransformSpec(background=(0, 0, 255, 128))),
        ("trim=1;2;3;4", TransformSpec(trim=(1, 2, 3, 4))),
        ("trim=border", TransformSpec(trim="border")),
        ("rotate=90,flip=hv", TransformSpec(rotate=90, flip="hv")),
        ("blur=5,sharpen=2.5", TransformSpec(blur=5, sharpen=2.5)),
        ("metadata=keep,anim=false", TransformSpec(metadata="keep", anim=False)),
        ("format=baseline-jpeg", TransformSpec(format="baseline-jpeg")),
    ],
)
def test_parse(text: str, expected: TransformSpec | None) -> None:
    if expected is None:
        with pytest.raises(BadOption):
            parse_options(text)  # `#` arrives percent-decoded; `%23` here is not a colour
        return
    assert parse_options(text) == expected


@pytest.mark.parametrize(
    "equivalent",
    [
        "width=400,height=300,fit=cover",
        "h=300,w=400,fit=cover",
        "fit=cover,w=400,h=300,gravity=center,metadata=none,anim=true,rotate=0",
        "w=200,h=150,fit=cover,dpr=2",
        "w=400,h=300,fit=cover,sharpen=0,dpr=1",
    ],
)
def test_equivalent_urls_share_one_canonical_form(equivalent: str) -> None:
    assert parse_options(equivalent).canonical == "fit=cover,height=300,width=400"


def test_identity_is_underscore() -> None:
    assert IDENTITY.canonical == "_"
    assert parse_options("fit=scale-down").canonical == "_"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("width=0", "invalid width: expected an integer 1-16384"),
        ("width=-5", "invalid width"),
        ("width=16385", "invalid width"),
        ("w=1.5", "invalid width"),
        ("height=abc", "invalid height"),
        ("fit=stretch", "invalid fit: expected one of scale-down"),
        ("gravity=north", "invalid gravity"),
        ("gravity=1.5x0.5", "invalid gravity"),
        ("dpr=5", "invalid dpr"),
        ("dpr=nan", "invalid dpr"),
        ("format=bmp", "invalid format"),
        ("quality=0", "invalid quality"),
        ("quality=101", "invalid quality"),
        ("blur=251", "invalid blur"),
        ("sharpen=11", "invalid sharpen"),
        ("rotate=45", "invalid rotate"),
        ("flip=x", "invalid flip"),
        ("background=notacolour", "invalid background"),
        ("trim=1;2;3", "invalid trim"),
        ("metadata=all", "invalid metadata"),
        ("anim=yes", "invalid anim"),
        ("zoom=2", "unknown option 'zoom'"),
        ("width", "option width needs a value"),
        ("w=1,width=2", "option width given twice"),
        ("w=1,,h=2", "empty option"),
        ("w=9000,dpr=2", "invalid dpr"),
    ],
)
def test_errors_name_the_option(text: str, message: str) -> None:
    with pytest.raises(BadOption) as caught:
        parse_options(text)
    assert message in caught.value.public_message
    assert caught.value.status == 400


dimensions = st.none() | st.integers(1, MAX_DIMENSION)
specs = st.builds(
    TransformSpec,
    width=dimensions,
    height=dimensions,
    fit=st.sampled_from(FITS),
    gravity=st.sampled_from(["auto", "center", "left", "right", "top", "bottom"])
    | st.tuples(st.floats(0, 1), st.floats(0, 1)),
    format=st.none() | st.sampled_from(["auto", "avif", "webp", "jpeg", "png", "gif", "json"]),
    quality=st.none() | st.integers(1, 100),
    blur=st.none() | st.integers(1, 250),
    sharpen=st.none() | st.floats(0.01, 10),
    rotate=st.sampled_from([0, 90, 180, 270]),
    flip=st.none() | st.sampled_from(["h", "v", "hv"]),
    background=st.none() | st.tuples(*[st.integers(0, 255)] * 4),
    trim=st.none() | st.just("border") | st.tuples(*[st.integers(0, 5000)] * 4),
    metadata=st.sampled_from(["keep", "copyright", "none"]),
    anim=st.booleans(),
)


@given(specs)
def test_canonical_form_round_trips(spec: TransformSpec) -> None:
    assert parse_options(spec.canonical) == spec
    assert hash(parse_options(spec.canonical)) == hash(spec)


@given(st.text(max_size=200))
def test_no_input_raises_anything_but_bad_option(text: str) -> None:
    with contextlib.suppress(BadOption):
        parse_options(text)


option_soup = st.lists(
    st.tuples(
        st.sampled_from(["w", "width", "h", "fit", "g", "dpr", "f", "q", "blur", "trim", "x"]),
        st.text(alphabet="0123456789.;x-abcdefhgilnoprstuvw#()", max_size=12),
    ),
    max_size=6,
).map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs))


@given(option_soup)
def test_plausible_input_raises_only_bad_option(text: str) -> None:
    try:
        spec = parse_options(text)
    except BadOption:
        return
    assert parse_options(spec.canonical) == spec


def test_a_signature_that_is_not_ascii_is_a_bad_signature() -> None:
    # found by the atheris target (fuzz/fuzz_urls.py): hmac.compare_digest raised
    # TypeError for a non-ASCII str, which would have been a 500
    with pytest.raises(HTTPError) as refused:
        parse_request(
            "/\u00e9t\u00e9/w=10/a.jpg", keys=("k",), allow_unsigned=False, allowed_hosts=()
        )
    assert refused.value.status == 403


@pytest.mark.parametrize(
    ("name", "rgba"),
    [
        ("cornflowerblue", (100, 149, 237, 255)),
        ("rebeccapurple", (102, 51, 153, 255)),
        ("PapayaWhip", (255, 239, 213, 255)),
        ("transparent", (0, 0, 0, 0)),
        ("abc", (170, 187, 204, 255)),  # hex without its '#'
    ],
)
def test_every_css_colour_name_works(name: str, rgba: tuple[int, int, int, int]) -> None:
    assert parse_options(f"background={name}").background == rgba

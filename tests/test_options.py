"""Options declared once: validation names the flag, flags are generated (and compose), parsed
arguments give back the same options, and the help text survives a literal '%'."""
from __future__ import annotations

import argparse
from dataclasses import FrozenInstanceError, dataclass

import pytest

from cape_hpc.analysis.nc import NcOptions
from cape_hpc.errors import OptionError
from cape_hpc.options import Options, option


@dataclass(frozen=True)
class Demo(Options):
    share: float = option(0.5, help="share of 100% of the models", minimum=0.0, maximum=1.0)
    count: int = option(3, help="how many", minimum=1, aliases=("-k",))
    mode: str = option("a", help="mode", choices=("a", "b"))
    flag: bool = option(True, help="a switch")
    window: tuple[float, float] | None = option(None, help="window", metavar=("LO", "HI"))
    names: tuple[str, ...] = option(("x",), help="names")


@pytest.mark.parametrize("kw, message", [
    ({"share": 1.5}, "option '--share': must be <= 1, got 1.5"),
    ({"count": 0}, "option '--count': must be >= 1, got 0"),
    ({"count": 2.5}, "option '--count': 2.5 is not an integer"),
    ({"mode": "c"}, "option '--mode': 'c' is not one of a, b"),
    ({"share": float("nan")}, "option '--share': must be finite"),
    ({"window": (1.0,)}, "option '--window': expected 2 values, got 1"),
    ({"flag": "yes"}, "option '--flag': expected true or false"),
])
def test_invalid_values_name_the_flag(kw, message):
    with pytest.raises(OptionError) as exc:
        Demo(**kw)
    assert str(exc.value).startswith(message)


def test_frozen_and_stored_unchanged():
    d = Demo(names=["p", "q"])
    assert d.names == ("p", "q")
    with pytest.raises(FrozenInstanceError):
        d.count = 4
    assert d.to_dict() == {"share": 0.5, "count": 3, "mode": "a", "flag": True, "window": None, "names": ["p", "q"]}


def test_flags_parse_back_into_the_same_options(capsys):
    p = argparse.ArgumentParser(prog="demo")
    Demo.add_arguments(p)
    args = p.parse_args(["-k", "5", "--no-flag", "--window", "1", "2", "--names", "a", "b", "--share", "0.25"])
    assert Demo.from_args(args) == Demo(share=0.25, count=5, flag=False, window=(1.0, 2.0), names=("a", "b"))
    assert Demo.from_args(p.parse_args([])) == Demo()
    p.print_help()  # a literal % in a help text must not break argparse's formatting
    text = capsys.readouterr().out
    assert "share of 100% of the models (default: 0.5)" in text and "--window LO HI" in text


def test_composed_classes_share_one_flag():
    """NcOptions = CouplingOptions + BootstrapOptions + its own; adding it after another class with a
    shared field (seed) does not add the flag twice."""
    @dataclass(frozen=True)
    class Other(Options):
        seed: int = option(7, help="seed", minimum=0)

    p = argparse.ArgumentParser()
    Other.add_arguments(p)
    NcOptions.add_arguments(p)
    flags = [s for a in p._actions for s in a.option_strings]
    assert flags.count("--seed") == 1 and "-n" in flags and "--n-resamples" in flags
    args = p.parse_args(["-n", "123", "--pair", "HS", "ARC", "--estimator", "quadratic"])
    o = NcOptions.from_args(args)
    assert (o.n_resamples, o.b1, o.b2, o.seed) == (123, "HS", "ARC", 7)


def test_cross_field_rules():
    with pytest.raises(OptionError, match="'--pair': the two columns must differ"):
        NcOptions(pair=("HS", "HS"))
    with pytest.raises(OptionError, match="tax-below must not exceed bonus-above"):
        NcOptions(tax_below=0.5, bonus_above=0.1)
    assert NcOptions(units="fraction").min_delta_resolved == pytest.approx(0.005)


@pytest.mark.parametrize("name, text, value", [
    ("share", "0.25", 0.25), ("count", " 7", 7), ("mode", "b", "b"), ("flag", "no", False), ("flag", "ON", True),
    ("window", "none", None), ("window", "1,2.5", (1.0, 2.5)), ("names", "a, b,c", ("a", "b", "c")),
])
def test_parse_field_converts_text_as_the_flag_does(name, text, value):
    """``--set``'s parser: the text is converted by the field's annotation, and the result is what the
    command-line flag gives for the same text (argparse's parse, compared field by field)."""
    got = Demo.parse_field(name, text)
    assert got == value and type(got) is type(value)
    p = argparse.ArgumentParser()
    Demo.add_arguments(p)
    items = value if isinstance(value, tuple) else (value,)
    argv = ({"flag": ["--flag" if value else "--no-flag"]}.get(name)
            or ([] if value is None else ["--" + name, *map(str, items)]))
    assert getattr(Demo.from_args(p.parse_args(argv)), name) == value


@pytest.mark.parametrize("name, text, message", [
    ("share", "2", "option '--set demo.share': must be <= 1, got 2.0"),
    ("count", "one", "option '--set demo.count': 'one' is not an integer"),
    ("mode", "c", "option '--set demo.mode': 'c' is not one of a, b"),
    ("flag", "maybe", "option '--set demo.flag': expected true or false, got 'maybe'"),
    ("window", "1", "option '--set demo.window': expected 2 values, got 1"),
    ("count", "none", "option '--set demo.count': 'none' is not an integer"),
    ("colour", "red", "option '--set demo.colour': no option 'colour'"),
])
def test_parse_field_validates_with_the_given_label(name, text, message):
    with pytest.raises(OptionError) as exc:
        Demo.parse_field(name, text, label=f"option '--set demo.{name}'")
    assert str(exc.value) == message


def test_field_value_checks_one_field_like_the_options_do():
    """A typed value (a job file's) is checked by the same rules as the constructor, naming the label."""
    assert Demo.field_value("names", ["p", "q"]) == ("p", "q")
    assert Demo.field_value("share", 1) == 1.0 and isinstance(Demo.field_value("share", 1), float)
    with pytest.raises(OptionError, match=r"^job.yaml: models\[2\].count: must be >= 1, got 0$"):
        Demo.field_value("count", 0, label="job.yaml: models[2].count")
    with pytest.raises(OptionError, match=r"^option '--count': must be >= 1, got 0$"):
        Demo.field_value("count", 0)


def test_pattern_is_checked_with_its_words():
    @dataclass(frozen=True)
    class Named(Options):
        name: str = option("a", help="a name", pattern=r"[a-z]+", pattern_help="lower-case letters")
        code: str = option("x1", help="a code", pattern=r"x[0-9]")

    assert Named(name="abc").name == "abc"
    with pytest.raises(OptionError, match=r"^option '--name': 'a/b' is not lower-case letters$"):
        Named(name="a/b")
    with pytest.raises(OptionError, match=r"^option '--code': 'x12' is not of the form x\[0-9\]$"):
        Named(code="x12")       # the whole text must match

"""Env files as docker reads them: one module, used by spec, the vLLM engine and launch."""

from __future__ import annotations

import pytest

from slurmserve import SpecError, envfile


def test_pairs_split_at_newline_only_and_keep_values_literal(tmp_path):
    path = tmp_path / "env"
    path.write_bytes("# comment\n\nHF_TOKEN=hf_x=y\r\nNOTE=a\u2028b\fc\n  PAD=  spaced \n".encode())
    envfile.check(str(path))
    assert envfile.pairs(str(path)) == [("HF_TOKEN", "hf_x=y"), ("NOTE", "a\u2028b\fc"),
                                        ("PAD", "  spaced")]  # the line is stripped


@pytest.mark.parametrize("text,problem", [
    ("export A=1\n", "line 1 starts with `export`"),
    ("OK=1\nnot a pair\n", "line 2 is not KEY=VALUE"),
    ("1BAD=x\n", "line 1 is not KEY=VALUE"),
    ("A=x\x00y\n", "line 1 holds a NUL byte"),
])
def test_check_names_the_line_never_its_text(tmp_path, text, problem):
    path = tmp_path / "env"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        envfile.check(str(path))
    assert problem in str(err.value) and "x\x00y" not in str(err.value)


def test_check_refuses_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        envfile.check(str(tmp_path / "missing"))
    path = tmp_path / "latin1"
    path.write_bytes(b"A=\xe9\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        envfile.check(str(path))


def test_the_file_is_read_once_for_spec_engine_and_launch(tmp_path, monkeypatch):
    import builtins

    from slurmserve import api, load_spec
    from slurmserve.lifecycle import launch
    from tests.unit.helpers import allocation

    path = tmp_path / "env"
    path.write_text("HF_TOKEN=hf_secret\n")
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kw):
        if str(file) == str(path):
            opened.append(file)
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", counting_open)
    spec = load_spec(engine="vllm", model="m", image="registry.example/e:1", gpus_per_node=1,
                     env_file=str(path))  # the spec check and vLLM's VLLM_API_KEY check
    bundle = launch.build(spec, api.plan_cluster(spec, allocation(1)), str(tmp_path / "run"), "i")
    assert ("HF_TOKEN", "hf_secret") in bundle.nodes[0].env and len(opened) == 1
    path.write_text("HF_TOKEN=hf_other_value\n")  # changed: read again
    assert envfile.pairs(str(path)) == [("HF_TOKEN", "hf_other_value")] and len(opened) == 2

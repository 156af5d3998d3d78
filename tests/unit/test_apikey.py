"""--api-key: the spec holds where the key comes from; the key reaches only the serving container
(through 0600 files), the readiness probe and the clients, never argv, scripts or state."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from slurmserve import api, apikey, engines, load_spec
from slurmserve.errors import SpecError
from slurmserve.lifecycle import launch
from slurmserve.lifecycle.health import Prober
from slurmserve.plan import Readiness
from tests.unit.helpers import allocation
from tests.unit.test_quoting import _run_node_script

KEY = "sk-$(touch${IFS}/tmp/pwned)`id`'\"\\;|&#:{x}"  # every quoting hazard a header value allows
IMG = "registry.example/engine:1"


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("SERVE_TEST_KEY", KEY)
    return "env:SERVE_TEST_KEY"


def _key_file(tmp_path: Path, text: str = KEY + "\n", mode: int = 0o600) -> Path:
    path = tmp_path / "serve.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_sources_are_normalised_and_read(tmp_path, key_env, monkeypatch):
    assert apikey.parse_source(key_env) == key_env
    assert apikey.read(key_env) == KEY
    path = _key_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert apikey.parse_source("file:serve.key") == f"file:{path}"
    assert apikey.read(f"file:{path}") == KEY
    assert apikey.shell_ref(key_env) == "$SERVE_TEST_KEY"
    assert apikey.shell_ref("file:/a b/k") == "$(cat '/a b/k')"


@pytest.mark.parametrize("value,words", [
    ("sk-literal-1234", ["not the key itself"]),
    ("env:", ["does not name"]),
    ("env:1BAD", ["does not name"]),
    ("env:SERVE_UNSET_KEY", ["SERVE_UNSET_KEY", "not set"]),
    ("file:/nonexistent/key", ["cannot read", "/nonexistent/key"]),
])
def test_bad_sources_never_echo_the_value(value, words):
    with pytest.raises(SpecError) as info:
        apikey.parse_source(value)
    assert info.value.field == "--api-key"
    for word in words:
        assert word in str(info.value)
    if not value.startswith(("env:", "file:")):
        assert value not in str(info.value)


@pytest.mark.parametrize("text,mode,words", [
    (KEY, 0o644, ["chmod 600"]),
    ("", 0o600, ["empty key"]),
    ("one\nsecond-line\n", 0o600, ["line breaks"]),
    ("with space", 0o600, ["spaces"]),
    ("ключ", 0o600, ["non-ASCII"]),
])
def test_bad_key_files(tmp_path, text, mode, words):
    path = _key_file(tmp_path, text, mode)
    with pytest.raises(SpecError) as info:
        apikey.parse_source(f"file:{path}")
    for word in words:
        assert word in str(info.value)
    assert "ключ" not in str(info.value) and "second-line" not in str(info.value)


def test_client_key_precedence(key_env, monkeypatch):
    monkeypatch.setenv("OTHER_KEY", "k2")
    assert apikey.for_client("typed", key_env, "fallback") == "typed"
    assert apikey.for_client("env:OTHER_KEY", key_env, "fallback") == "k2"
    assert apikey.for_client(None, key_env, "fallback") == KEY
    assert apikey.for_client(None, None, "fallback") == "fallback"
    assert apikey.for_client(None, None, None) is None
    with pytest.raises(SpecError, match="SERVE_GONE"):
        apikey.for_client(None, "env:SERVE_GONE", "fallback")
    with pytest.raises(SpecError, match="OPENAI_API_KEY"):
        apikey.for_client(None, None, "a\nb")


def _texts(spec, nodes: int = 1) -> tuple[str, launch.Launch]:
    """Everything a launch renders or records as text, and the launch itself."""
    alloc = allocation(nodes)
    plan = api.plan_cluster(spec, alloc)
    bundle = launch.build(spec, plan, "/shared/logs/4242", IMG)
    rendered = "\n".join([bundle.script, api.render_sbatch(spec), json.dumps(api.describe(spec)),
                          json.dumps(plan.to_dict()), repr(bundle), repr(spec)])
    return rendered, bundle


def test_vllm_key_travels_in_the_serving_nodes_env_file_only(key_env):
    spec = load_spec(engine="vllm", model="m", image=IMG, nodes=2, gpus_per_node=1, dp=2,
                     api_key=key_env)
    rendered, bundle = _texts(spec, 2)
    assert KEY not in rendered and "SERVE_TEST_KEY" in rendered  # the source, not the key
    env = [dict(n.env) for n in bundle.nodes]
    assert env[0]["VLLM_API_KEY"] == KEY and "VLLM_API_KEY" not in env[1]
    assert bundle.api_key == KEY
    assert f"VLLM_API_KEY={KEY}\n" in launch.env_file_text(bundle.nodes[0].env)


def test_sglang_key_travels_in_a_config_file_outside_argv(key_env):
    spec = load_spec(engine="sglang", model="m", image=IMG, nodes=2, gpus_per_node=1, tp=2,
                     api_key=key_env)
    rendered, bundle = _texts(spec, 2)
    assert KEY not in rendered
    plan = api.plan_cluster(spec, allocation(2))
    head, worker = plan.nodes
    assert head.command[-2:] == ("--config", "/slurmserve/secrets/api-key.yaml")
    assert head.secrets == ("api-key.yaml",) and "--config" not in worker.command
    (name, content), = bundle.nodes[0].secrets
    assert yaml.safe_load(content) == {"api-key": KEY}
    assert bundle.nodes[1].secrets == ()


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=60))
def test_any_printable_key_survives_sglangs_yaml(key):
    content = engines.get("sglang").api_key_files(key)["api-key.yaml"]
    assert yaml.safe_load(content) == {"api-key": key}


def test_node_script_argv_never_holds_the_key(tmp_path, key_env):
    for engine in ("vllm", "sglang"):
        spec = load_spec(engine=engine, model="m", image=IMG, gpus_per_node=1, api_key=key_env)
        argv = _run_node_script(tmp_path / engine, spec)
        assert not any(KEY in a for a in argv), engine
        run = tmp_path / engine / "run"
        secrets = list(run.glob("node-0/secrets/*"))
        for path in [*secrets, *run.glob("node-*.env")]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        if secrets:
            assert stat.S_IMODE(secrets[0].parent.stat().st_mode) == 0o700
        holders = [p.name for p in run.rglob("*") if p.is_file() and p.suffix != ".redact" and (
            KEY in p.read_text() or p.suffix == ".yaml" and yaml.safe_load(p.read_text()))]
        assert holders == (["api-key.yaml"] if engine == "sglang" else ["node-0.env"]), engine
        assert stat.S_IMODE((run / "node-0.redact").stat().st_mode) == 0o600


def test_trtllm_and_key_flags_after_dashes_are_refused(key_env):
    with pytest.raises(SpecError, match="trtllm-serve has no API key"):
        load_spec(engine="trtllm", model="m", image=IMG, api_key=key_env)
    with pytest.raises(SpecError, match="--api-key \\(after --\\)"):
        load_spec(engine="vllm", model="m", image=IMG, engine_args=["--api-key", "x"])
    with pytest.raises(SpecError, match="one --config"):
        load_spec(engine="sglang", model="m", image=IMG, api_key=key_env,
                  engine_args=["--config", "my.yaml"])


def test_readiness_probe_sends_the_key():
    sys.path.append(str(Path(__file__).resolve().parents[2] / "containers/testing/standin"))
    from standin import server

    config = server.ServeConfig(engine="vllm", model="m", served_names=["m"], host="127.0.0.1",
                                port=0, api_key=KEY)
    app = server.ApiServer(config)
    host, port = app.start()
    try:
        with_key = Prober(f"http://{host}:{port}", Readiness(), api_key=KEY)
        without = Prober(f"http://{host}:{port}", Readiness())
        assert with_key.models()[0].ok and with_key.generate("m").ok
        assert not without.models()[0].ok and "401" in without.generate("m").detail
    finally:
        app.close()


def test_state_and_json_carry_only_the_source(tmp_path, key_env, run_cli):
    code, out, err = run_cli("render", "vllm", "m", "--image", IMG, "--gpus-per-node", "1",
                             "--api-key", key_env, "--json")
    assert code == 0, err
    assert KEY not in out and json.loads(out)["spec"]["api_key"] == key_env
    assert os.environ["SERVE_TEST_KEY"] == KEY


LOGGING_ENGINE = r"""#!/usr/bin/env bash
# Test double for the docker CLI whose "engine" prints its secrets, as SGLang logs ServerArgs.
case "$1" in
  run)
    while (( $# )); do [[ "$1" == --env-file ]] && cat "$2"; shift; done
    printf 'server_args=ServerArgs(api_key=%s)\n' "$REPR_KEY"
    printf 'last line\n' ;;
  *) : ;;
esac
"""


def test_secrets_printed_by_the_engine_are_masked_in_the_node_log(tmp_path, key_env):
    import subprocess

    env_file = tmp_path / "user.env"
    env_file.write_text("HF_TOKEN=hf_visible_secret_42\nPLAIN=value-kept\n")
    spec = load_spec(engine="sglang", model="m", image=IMG, gpus_per_node=1, api_key=key_env,
                     env_file=str(env_file))
    alloc = allocation(1)
    bundle = launch.build(spec, api.plan_cluster(spec, alloc), str(tmp_path / "run"), IMG)
    launch.write(bundle)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(LOGGING_ENGINE)
    (bindir / "docker").chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", REPR_KEY=repr(KEY),
               SLURM_PROCID="0", SLURMD_NODENAME=alloc.nodes[0].name)
    result = subprocess.run(["bash", bundle.script_path], env=env, capture_output=True,
                            text=True, timeout=30)
    assert "exited with code 0" in result.stderr or result.returncode == 0, result.stderr
    log = Path(bundle.nodes[0].log)
    for _ in range(100):  # the masking reader ends just after the container
        if "last line" in log.read_text():
            break
        import time

        time.sleep(0.02)
    text = log.read_text()
    assert "last line" in text and "PLAIN=value-kept" in text
    assert "HF_TOKEN=<redacted>" in text and "api_key='<redacted>')" in text, text
    for secret in (KEY, repr(KEY)[1:-1], "hf_visible_secret_42"):
        assert secret not in text


@pytest.mark.parametrize("name", ["vllm", "sglang", "trtllm"])
def test_every_engine_says_how_it_takes_a_key(name):
    files = engines.get(name).api_key_files("sk-x")
    assert isinstance(files, dict) and all(isinstance(v, str) for v in files.values())

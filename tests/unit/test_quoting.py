"""No injection: arbitrary user strings reach the engine's argv literally.

The rendered node script is executed for real under bash with a recording `docker` on PATH
(a test double for the docker CLI only: what is checked is bash's quoting, not Docker). The
recorded argv of `docker run` must contain every user value byte for byte; env values must
survive docker's env-file format.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurmserve import api, load_spec
from slurmserve.lifecycle import launch
from tests.unit.helpers import allocation

RECORDER = r"""#!/usr/bin/env bash
# Test double for the docker CLI: records `docker run` argv NUL-separated, fakes the rest.
case "$1" in
  run) printf '%s\0' "$@" > "$RECORD"; echo fakeid ;;
  wait|inspect) echo 0 ;;
  *) : ;;
esac
"""

# Any printable text, including quotes, $, `, ;, |, &, *, unicode; no NUL/newline (refused).
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n\r"),
               min_size=1, max_size=40)
path_part = st.text(st.characters(blacklist_categories=("Cs",),
                                  blacklist_characters="\x00\n\r/:,"), min_size=1, max_size=15)


def _run_node_script(tmp: Path, spec) -> list[str]:
    alloc = allocation(1)
    plan = api.plan_cluster(spec, alloc)
    bundle = launch.build(spec, plan, str(tmp / "run"), "registry.example/engine:1")
    launch.write(bundle)
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "docker").write_text(RECORDER)
    (bindir / "docker").chmod(0o755)
    record = tmp / "record"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", RECORD=str(record),
               SLURM_PROCID="0", SLURMD_NODENAME=alloc.nodes[0].name)
    result = subprocess.run(["bash", bundle.script_path], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return record.read_bytes().decode().split("\0")[:-1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=text, served=text, arg1=text, arg2=text, env_value=text, src=path_part, dst=path_part)
def test_user_values_reach_the_engine_literally(tmp_path_factory, model, served, arg1, arg2,
                                                env_value, src, dst):
    tmp = tmp_path_factory.mktemp("q")
    spec = load_spec(engine="sglang", model=model, served_model_name=served,
                     image="registry.example/engine:1", gpus_per_node=1,
                     mounts=[f"/{src}:/{dst}:ro"], env=[("USER_VALUE", env_value)],
                     engine_args=["--custom-flag", arg1, f"--other={arg2}"])
    argv = _run_node_script(tmp, spec)
    image_at = argv.index("registry.example/engine:1")
    command = [argv[image_at - 1], *argv[image_at + 1:]]  # --entrypoint value, then the rest
    assert command[:3] == ["python3", "-m", "sglang.launch_server"]
    assert command[command.index("--model-path") + 1] == model
    assert command[command.index("--served-model-name") + 1] == served
    assert command[-3:] == ["--custom-flag", arg1, f"--other={arg2}"]
    assert f"/{src}:/{dst}:ro" in argv
    env_file = argv[argv.index("--env-file") + 1]
    assert f"USER_VALUE={env_value}\n" in Path(env_file).read_text()


def test_env_values_never_reach_argv(tmp_path):
    secrets = tmp_path / "hf.env"
    secrets.write_text("HF_TOKEN=hf_secret_value_123\n")
    spec = load_spec(engine="vllm", model="m", image="registry.example/engine:1", gpus_per_node=1,
                     env_file=str(secrets))
    argv = _run_node_script(tmp_path, spec)
    assert not any("hf_secret_value_123" in a for a in argv)
    env_file = Path(argv[argv.index("--env-file") + 1])
    assert "HF_TOKEN=hf_secret_value_123\n" in env_file.read_text()
    assert env_file.stat().st_mode & 0o777 == 0o600

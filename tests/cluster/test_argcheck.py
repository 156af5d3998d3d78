"""The argument check on the sandbox: every rank's command line through the engine's own
parser inside the image before launch (the stand-ins answer through their entry points; the
vLLM CPU image with vLLM's own parser), the version recorded, `doctor`'s `args` column."""

from __future__ import annotations

import json
import subprocess

from deploy import Deployment, our_containers

VLLM = ("--served-model-name", "tiny", "--gpus", "none", "--gpus-per-node", "1",
        "--health-timeout", "900")


def test_a_flag_the_stand_in_rejects_fails_before_launch(deploy, sandbox):
    d = deploy(2, "vllm", "org/tiny-model", "--tp", "1", "--dp", "2", "--",
               "--enforce-eager=yes")
    assert d.wait(120) == 1
    assert "argument check failed, nothing was started" in d.err
    assert "rank 0 (n1): vllm 0.1.0+standin rejects `--enforce-eager`" in d.err
    assert "ignored explicit argument 'yes'" in d.err
    assert "container slurmserve-" not in d.err  # no node started one
    assert not our_containers(sandbox, d.job_id)


def test_the_version_found_is_in_the_state_and_the_run_goes_on(deploy, sandbox):
    d = deploy(2, "sglang", "org/tiny-model", "--tp", "2")
    try:
        d.wait_ready()
        assert "every rank's command line accepted by sglang 0.1.0+standin" in d.err
        record = json.loads(next(d.log_dir.glob("*/state.json")).read_text())
        assert record["engine_version"] == "sglang 0.1.0+standin"
    finally:
        d.close()


def test_doctor_shows_the_args_column(sandbox, standin_tarball, tmp_path):
    warm = Deployment(tmp_path / "warm", 1, "trtllm", "org/tiny-model", "--image",
                      str(standin_tarball), "--gpus", "none", "--gpus-per-node", "1")
    try:
        warm.wait_ready()  # the head now holds the image: doctor checks the args there
    finally:
        warm.close()
    base = ["slurmserve", "doctor", "trtllm", "org/tiny-model", "--image", str(standin_tarball),
            "--gpus", "none", "--gpus-per-node", "1", "--log-dir", str(tmp_path / "d")]
    ok = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=180)
    findings = [f for f in json.loads(ok.stdout)["findings"] if f["check"] == "args"]
    assert [f["status"] for f in findings] == ["ok"], ok.stdout
    assert "trtllm 0.1.0+standin" in findings[0]["detail"]
    bad = subprocess.run([*base, "--", "--trust_remote_code=x"], capture_output=True, text=True,
                         timeout=180)
    assert bad.returncode == 1 and "args" in bad.stdout.splitlines()[0]
    assert "rejects `--trust_remote_code`" in bad.stdout
    assert not our_containers(sandbox)


def test_real_vllm_parser_rejects_a_bad_flag_before_launch(sandbox, vllm_tarball, tmp_path):
    d = Deployment(tmp_path, 1, "vllm", "/models/tiny", "--image", str(vllm_tarball), *VLLM,
                   "--", "--max-model-len", "512", "--no-such-flag", "1")
    try:
        assert d.wait(600) == 1
    finally:
        d.close()
    assert "argument check failed, nothing was started" in d.err
    assert "vllm 0.32.0 rejects `--no-such-flag`" in d.err
    assert "unrecognized arguments: --no-such-flag 1" in d.err
    assert not our_containers(sandbox, d.job_id)

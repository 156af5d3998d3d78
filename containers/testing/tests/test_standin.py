"""Tests of the stand-in engines (../standin), the test doubles themselves: host and loopback only.

Nothing here needs docker, Ray or MPI: the CLI planners, the TCP rendezvous and the
OpenAI-compatible server run in-process or as local subprocesses on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STANDIN = Path(__file__).resolve().parents[1] / "standin"
sys.path.append(str(STANDIN))  # last: the stand-in `sglang` must not shadow anything

from standin import common, server, sglang_cli, textgen, trtllm_cli, vllm_cli  # noqa: E402
from standin.common import Faults, StandinError  # noqa: E402
from standin.rendezvous import Follower, Leader, RendezvousError  # noqa: E402
from standin.runtime import expand_members  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_package_imports_without_ray_or_mpi() -> None:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import standin.runtime, standin.vllm_cli, standin.sglang_cli, standin.trtllm_cli; "
            "import sglang.launch_server; "
            "print(sorted(m for m in ('ray', 'mpi4py', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(STANDIN)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- vLLM command line ------------------------------------------------------------------------


def test_vllm_single_node_records_unknown_flags_literally() -> None:
    launch = vllm_cli.plan(["org/model", "-tp", "2", "--pipeline-parallel-size", "2",
                            "--weird-flag", "x y", "--other=1", "--served-model-name", "a", "b"],
                           {})
    assert (launch.mode, launch.world_size, launch.serve) == ("single", 4, True)
    assert launch.unknown_args == ["--weird-flag", "x y", "--other=1"]
    assert launch.served_names == ["a", "b"]
    assert launch.port == 8000 and launch.host is None


def test_vllm_model_flag_api_key_env_and_model_len_suffix() -> None:
    launch = vllm_cli.plan(["--model", "m", "--max-model-len", "32k"], {"VLLM_API_KEY": "s3"})
    assert (launch.model, launch.api_key, launch.max_model_len) == ("m", "s3", 32000)
    with pytest.raises(StandinError, match="model is required"):
        vllm_cli.plan(["--port", "1"], {})


def test_vllm_single_node_short_of_gpus_fails_like_vllm() -> None:
    with pytest.raises(StandinError, match=r"World size \(16\) is larger .* GPUs \(8\)"):
        vllm_cli.plan(["m", "-tp", "16"], {})
    with pytest.raises(StandinError, match=r"World size \(2\)"):
        vllm_cli.plan(["m", "-tp", "2"], {"CUDA_VISIBLE_DEVICES": "0"})
    assert vllm_cli.plan(["m", "-tp", "4"], {"SLURMSERVE_STANDIN_GPUS": "4"}).world_size == 4


def test_vllm_ray_mode_selection() -> None:
    explicit = vllm_cli.plan(["m", "-tp", "4", "-pp", "2", "--distributed-executor-backend",
                              "ray"], {})
    assert explicit.mode == "ray" and explicit.ray is not None
    assert (explicit.ray.world, explicit.ray.groups, explicit.ray.strict_pack) == (8, 1, False)
    # Like vLLM: a world beyond the node's GPUs needs the explicit flag, RAY_ADDRESS or not.
    with pytest.raises(StandinError, match="set '--distributed-executor-backend ray'"):
        vllm_cli.plan(["m", "-tp", "16"], {"RAY_ADDRESS": "10.77.0.1:6379"})
    dp_ray = vllm_cli.plan(["m", "-tp", "2", "-dp", "2", "--data-parallel-backend", "ray"], {})
    assert dp_ray.ray is not None and (dp_ray.ray.groups, dp_ray.ray.strict_pack) == (2, True)
    assert dp_ray.world_size == 4


def test_vllm_native_multinode_roles() -> None:
    head = vllm_cli.plan(["m", "-tp", "8", "-pp", "2", "--nnodes", "2", "--node-rank", "0",
                          "--master-addr", "10.77.0.1", "--master-port", "29600"], {})
    assert head.mode == "mp-multinode" and head.serve and head.rendezvous is not None
    assert (head.rendezvous.host, head.rendezvous.port, head.rendezvous.total) == (
        "10.77.0.1", 29600, 2)
    assert head.workers_here == 8 and head.world_size == 16
    worker = vllm_cli.plan(["m", "-tp", "8", "-pp", "2", "--nnodes", "2", "--node-rank", "1",
                            "--master-addr", "10.77.0.1", "--headless"], {})
    assert not worker.serve and worker.rendezvous is not None
    assert worker.rendezvous.ranks == [1] and worker.rendezvous.port == 29501
    short = vllm_cli.plan(["m", "-tp", "2", "-n", "2", "-r", "1", "--headless"], {})
    assert short.rendezvous is not None and short.rendezvous.ranks == [1]
    with pytest.raises(StandinError, match="must evenly divide the total world size"):
        vllm_cli.plan(["m", "-tp", "3", "--nnodes", "2"], {})
    with pytest.raises(StandinError, match="must run with --headless"):
        vllm_cli.plan(["m", "-tp", "2", "--nnodes", "2", "--node-rank", "1"], {})
    with pytest.raises(StandinError, match="must not be --headless"):
        vllm_cli.plan(["m", "-tp", "2", "--nnodes", "2", "--headless"], {})
    with pytest.raises(StandinError, match="needs a multi-node setup"):
        vllm_cli.plan(["m", "--headless"], {})


def test_vllm_data_parallel_rpc_roles() -> None:
    head = vllm_cli.plan(["m", "-dp", "4", "-dpl", "2", "-dpa", "10.77.0.1", "-dpp", "13345"],
                         {})
    assert head.mode == "dp-rpc" and head.serve and head.rendezvous is not None
    assert head.rendezvous.ranks == [0, 1] and head.rendezvous.port == 13345
    tail = vllm_cli.plan(["m", "--data-parallel-size", "4", "--data-parallel-size-local", "2",
                          "--data-parallel-address", "10.77.0.1", "--data-parallel-start-rank",
                          "2", "--headless"], {})
    assert not tail.serve and tail.rendezvous is not None and tail.rendezvous.ranks == [2, 3]
    with pytest.raises(StandinError, match="Remote engine 2 must use --headless"):
        vllm_cli.plan(["m", "-dp", "4", "-dpl", "2", "-dpa", "h", "-dpr", "2"], {})
    hybrid = vllm_cli.plan(["m", "-dp", "4", "-dpl", "2", "-dpa", "h", "-dpr", "2",
                            "--data-parallel-hybrid-lb"], {})
    assert hybrid.serve
    with pytest.raises(StandinError, match="--data-parallel-address is required"):
        vllm_cli.plan(["m", "-dp", "4", "-dpl", "2"], {})
    assert vllm_cli.plan(["m", "-dp", "2", "-tp", "2", "--enable-expert-parallel"],
                         {}).parallel["expert_parallel_size"] == 4


def test_vllm_cli_rejects_other_subcommands() -> None:
    with pytest.raises(SystemExit) as e:
        vllm_cli.main(["bench", "serve"])
    assert e.value.code == 2


# ---- SGLang command line ----------------------------------------------------------------------


def test_sglang_defaults_and_aliases() -> None:
    launch = sglang_cli.plan(["--model-path", "m", "--tp", "4", "--ep", "2", "--extra", "1"], {})
    assert (launch.host, launch.port, launch.mode) == ("127.0.0.1", 30000, "single")
    assert launch.parallel["tp_size"] == 4 and launch.parallel["ep_size"] == 2
    assert launch.unknown_args == ["--extra", "1"]
    assert launch.metrics_enabled is False
    assert sglang_cli.plan(["--model-path", "m", "--enable-metrics"], {}).metrics_enabled


def test_sglang_multinode() -> None:
    head = sglang_cli.plan(["--model-path", "m", "--tp", "16", "--nnodes", "2", "--node-rank",
                            "0", "--dist-init-addr", "10.77.0.1:5000"], {})
    assert head.serve and head.rendezvous is not None
    assert (head.rendezvous.host, head.rendezvous.port) == ("10.77.0.1", 5000)
    assert head.workers_here == 8
    other = sglang_cli.plan(["--model-path", "m", "--tp-size", "16", "--nnodes", "2",
                             "--node-rank", "1", "--dist-init-addr", "10.77.0.1:5000"], {})
    assert not other.serve and other.rank == 1
    with pytest.raises(StandinError, match="dist-init-addr"):
        sglang_cli.plan(["--model-path", "m", "--tp", "16", "--nnodes", "2"], {})


@pytest.mark.parametrize(("argv", "message"), [
    (["--tp", "8", "--ep", "3"], "must divide"),
    (["--tp", "8", "--dp", "2", "--nnodes", "2", "--dist-init-addr", "h:1"],
     "unless dp attention"),
    (["--tp", "3", "--nnodes", "2", "--dist-init-addr", "h:1"], "divisible by nnodes"),
    (["--tp", "16"], "needs 16 GPUs"),
    (["--tp", "2", "--nnodes", "2", "--dist-init-addr", "nohostport"], "HOST:PORT"),
])
def test_sglang_constraints(argv: list[str], message: str) -> None:
    with pytest.raises(StandinError, match=message):
        sglang_cli.plan(["--model-path", "m", *argv], {})


def test_sglang_config_file_carries_options_outside_argv(tmp_path: Path) -> None:
    cfg = tmp_path / "auth.yaml"
    cfg.write_text('api-key: "k-$(x) \'q"\ntp_size: 2\nenable_metrics: true\n')
    launch = sglang_cli.plan(["--model-path", "m", "--config", str(cfg), "--tp", "1"], {})
    assert launch.api_key == "k-$(x) 'q"
    assert launch.parallel["tp_size"] == 1  # the command line wins over the file
    assert launch.metrics_enabled
    with pytest.raises(StandinError, match="YAML or JSON"):
        sglang_cli.plan(["--model-path", "m", "--config", str(tmp_path / "auth.txt")], {})
    with pytest.raises(StandinError, match="Only one"):
        sglang_cli.plan(["--model-path", "m", "--config", str(cfg), f"--config={cfg}"], {})


def test_sglang_dp_attention_keeps_world_at_tp() -> None:
    launch = sglang_cli.plan(["--model-path", "m", "--tp", "8", "--dp", "2",
                              "--enable-dp-attention", "--nnodes", "2", "--dist-init-addr",
                              "h:1"], {})
    assert launch.world_size == 8 and launch.workers_here == 4


# ---- TensorRT-LLM command line ----------------------------------------------------------------


def test_trtllm_config_yaml_overrides_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("tensor_parallel_size: 8\nmoe_expert_parallel_size: 2\n"
                   "moe_tensor_parallel_size: 4\nenable_attention_dp: true\n")
    launch = trtllm_cli.plan(["m", "--tp_size", "2", "--config", str(cfg)], {})
    assert launch.parallel["tensor_parallel_size"] == 8
    assert launch.parallel["moe_expert_parallel_size"] == 2
    assert launch.parallel["enable_attention_dp"] is True
    assert (launch.host, launch.port) == ("localhost", 8000)
    assert launch.extra_info["config"]["moe_tensor_parallel_size"] == 4
    cfg.write_text("tensor_parallel_size: 8\nmoe_expert_parallel_size: 2\n"
                   "moe_tensor_parallel_size: 2\n")
    with pytest.raises(StandinError, match="must equal tensor_parallel_size"):
        trtllm_cli.plan(["m", "--config", str(cfg)], {})


def test_trtllm_mpi_world_and_single_node() -> None:
    env = {"OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_RANK": "3"}
    worker = trtllm_cli.plan(["m", "--tp_size", "16", "--ep_size", "4"], env)
    assert (worker.mode, worker.mpi, worker.serve, worker.rank) == ("mpi", True, False, 3)
    assert worker.world_size == 16
    head = trtllm_cli.plan(["m", "--tp_size", "16"], {**env, "OMPI_COMM_WORLD_RANK": "0"})
    assert head.serve
    with pytest.raises(StandinError, match="16 GPUs needed"):
        trtllm_cli.plan(["m", "--tp_size", "16"], {})
    with pytest.raises(StandinError, match="must divide"):
        trtllm_cli.plan(["m", "--tp_size", "8", "--ep_size", "3"], {})
    generic = trtllm_cli.plan_launch(["bash", "-c", "true"], {"PMIX_RANK": "0"})
    assert generic.rank0_command == ["bash", "-c", "true"] and not generic.serve


# ---- common pieces ----------------------------------------------------------------------------


def test_faults_parse_and_rank_targeting() -> None:
    f = Faults.parse("break-streaming, exit-after=2.5, slow-start=1,no-metrics", rank=0)
    assert (f.break_streaming, f.exit_after, f.slow_start, f.no_metrics) == (True, 2.5, 1, True)
    assert Faults.parse("exit-after=3@1", rank=0).exit_after is None
    assert Faults.parse("exit-after=3@1", rank=1).exit_after == 3
    with pytest.raises(StandinError, match="unknown"):
        Faults.parse("explode", rank=0)


def test_selected_env_shows_secret_names_only() -> None:
    env = common.selected_env({"HF_TOKEN": "hf_secret", "VLLM_HOST_IP": "10.77.0.1",
                               "NCCL_SOCKET_IFNAME": "eth0", "HOME": "/root",
                               "VLLM_API_KEY": "k", "SLURMSERVE_JOB": "7"})
    assert env == {"HF_TOKEN": "<redacted>", "NCCL_SOCKET_IFNAME": "eth0",
                   "SLURMSERVE_JOB": "7", "VLLM_API_KEY": "<redacted>",
                   "VLLM_HOST_IP": "10.77.0.1"}


def test_model_resolution_offline_needs_the_hf_cache_online_serves_the_name(
        tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def cached(model: str, **kw: Any) -> str:
        calls.append((model, kw))
        return f"/hf/hub/models--{model.replace('/', '--')}/snapshots/abc"

    def missing(model: str, **kw: Any) -> str:
        raise LookupError("Cannot find an appropriate cached snapshot folder\nmore text")

    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": "/hf"}
    assert common.resolve_model("/models/absent", offline, missing) == "/models/absent"
    assert common.resolve_model(str(tmp_path), offline, missing) == str(tmp_path)
    assert common.resolve_model("org/m", {}, missing) is None  # online: the name is served
    assert common.resolve_model("org/m", {"HF_HUB_OFFLINE": "0"}, missing) is None
    assert common.resolve_model("org/m", offline, cached) == "/hf/hub/models--org--m/snapshots/abc"
    assert calls == [("org/m", {"local_files_only": True})]
    assert common.resolve_model("org/m", {"HF_HUB_OFFLINE": "true"}, cached)
    with pytest.raises(StandinError) as err:
        common.resolve_model("org/m", offline, missing)
    assert str(err.value) == (
        "cannot load org/m: not a local path, HF_HUB_OFFLINE=1 and not in the Hugging Face "
        "cache under HF_HOME=/hf (LookupError: Cannot find an appropriate cached snapshot folder)")


def test_local_gpus() -> None:
    assert common.local_gpus({}) == 8
    assert common.local_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2"}) == 3
    assert common.local_gpus({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert common.local_gpus({"SLURMSERVE_STANDIN_GPUS": "2", "CUDA_VISIBLE_DEVICES": "0"}) == 2


def test_textgen_is_deterministic_and_honours_stop() -> None:
    a = textgen.generate("hello", 12, 0)
    assert a == textgen.generate("hello", 12, 0)
    assert a.text != textgen.generate("hello", 12, 1).text
    assert len(a.tokens) == 12 and a.finish_reason == "length"
    stop = a.tokens[5]
    cut = textgen.generate("hello", 12, 0, stop=[stop])
    assert cut.finish_reason == "stop" and stop not in cut.text
    assert a.text.startswith(cut.text)
    assert textgen.count_tokens("Hi, there!") == 4


# ---- rendezvous -------------------------------------------------------------------------------


def _leader(port: int, total: int, timeout: float = 10, **kw: Any) -> Leader:
    fp = kw.pop("fingerprint", {"world_size": total})
    return Leader("127.0.0.1", port, total, [0], {"host": "h0", "node": "n1"}, fp, timeout,
                  "node_rank", **kw)


def _follower(port: int, ranks: list[int], timeout: float = 10,
              fingerprint: dict[str, Any] | None = None) -> Follower:
    return Follower("127.0.0.1", port, ranks, {"host": f"h{ranks[0]}", "node": f"n{ranks[0]}"},
                    fingerprint or {"world_size": 3}, timeout)


def _run_followers(followers: list[Follower]) -> tuple[list[Any], list[threading.Thread]]:
    results: list[Any] = [None] * len(followers)

    def go(i: int) -> None:
        try:
            results[i] = followers[i].run()
        except RendezvousError as e:
            results[i] = e

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(len(followers))]
    for t in threads:
        t.start()
    return results, threads


def test_rendezvous_three_ranks() -> None:
    port = free_port()
    followers = [_follower(port, [2]), _follower(port, [1])]
    results, threads = _run_followers(followers)  # followers first: they retry until rank 0
    time.sleep(0.4)
    leader = _leader(port, 3)
    members = leader.run()
    for t in threads:
        t.join(5)
    assert [m["ranks"] for m in members] == [[0], [1], [2]]
    assert [m["node"] for m in members] == ["n1", "n1", "n2"]
    assert all(m["ip"] == "127.0.0.1" for m in members)
    assert results[0] == members and results[1] == members
    expanded = expand_members(members, 2, "node_rank")
    assert [m["rank"] for m in expanded] == [0, 1, 2, 3, 4, 5]
    assert [m["node_rank"] for m in expanded] == [0, 0, 1, 1, 2, 2]
    leader.shutdown()
    for f in followers:
        f.close()


def test_rendezvous_leader_sees_a_peer_die_and_peer_sees_clean_bye() -> None:
    port = free_port()
    f1, f2 = _follower(port, [1]), _follower(port, [2])
    _, threads = _run_followers([f1, f2])
    leader = _leader(port, 3)
    leader.run()
    for t in threads:
        t.join(5)
    lost: list[str] = []
    leader.watch(lost.append)
    gone: list[bool] = []
    f2.watch(gone.append)
    f1.close()  # like a node dying
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost and "[1]" in lost[0] and "disconnected" in lost[0]
    leader.shutdown()
    while not gone and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone == [True]


def test_rendezvous_follower_sees_leader_vanish() -> None:
    port = free_port()
    f1 = _follower(port, [1], fingerprint={"world_size": 2})
    _, threads = _run_followers([f1])
    leader = _leader(port, 2)
    leader.run()
    threads[0].join(5)
    gone: list[bool] = []
    f1.watch(gone.append)
    for p in leader.peers:  # a crash: no bye, just closed sockets
        p.sock.close()
    deadline = time.monotonic() + 5
    while not gone and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone == [False]


def test_rendezvous_errors() -> None:
    port = free_port()
    with pytest.raises(RendezvousError, match=r"waiting for node_ranks \[1, 2\] of 3"):
        _leader(port, 3, timeout=0.5).run()
    with pytest.raises(RendezvousError, match="could not reach rank 0"):
        _follower(free_port(), [1], timeout=0.5).run()
    with pytest.raises(RendezvousError, match="cannot listen on 192.0.2.123"):
        Leader("192.0.2.123", port, 2, [0], {}, {}, 1).run()
    # A second "rank 1" (e.g. a wrong SLURM_PROCID) fails the whole group.
    results, threads = _run_followers([_follower(port, [1]), _follower(port, [1])])
    with pytest.raises(RendezvousError, match="claimed twice"):
        _leader(port, 3).run()
    for t in threads:
        t.join(5)
    assert any(isinstance(r, RendezvousError) for r in results)


def test_rendezvous_fingerprint_mismatch() -> None:
    port = free_port()
    results, threads = _run_followers([_follower(port, [1], fingerprint={"world_size": 4})])
    with pytest.raises(RendezvousError, match="disagrees with rank 0: world_size=4 there, 2"):
        _leader(port, 2, fingerprint={"world_size": 2}).run()
    threads[0].join(5)
    assert isinstance(results[0], RendezvousError) and "refused" in str(results[0])


# ---- API server -------------------------------------------------------------------------------


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[server.ApiServer]:
    kw: dict[str, Any] = getattr(request, "param", {})
    config = server.ServeConfig(engine=kw.pop("engine", "vllm"), model="/models/m",
                                served_names=["tiny"], host="127.0.0.1", port=0,
                                info={"argv": ["vllm", "serve"]}, **kw)
    app = server.ApiServer(config)
    app.start()
    yield app
    app.close()


def call(app: server.ApiServer, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    host, port = app._httpd.server_address[:2]  # type: ignore[union-attr]
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json",
                                                   **(headers or {})})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, payload


def events(raw: bytes) -> list[str]:
    return [line[len("data: "):] for line in raw.decode().split("\n\n") if line.strip()]


def test_health_models_info(api: server.ApiServer) -> None:
    assert call(api, "GET", "/health") == (200, b"")
    status, body = call(api, "GET", "/v1/models")
    models = json.loads(body)
    assert status == 200 and [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["root"] == "/models/m"
    info = json.loads(call(api, "GET", "/standin/info")[1])
    assert info["standin"] is True and info["engine"] == "vllm"
    assert info["argv"] == ["vllm", "serve"]


def test_completions(api: server.ApiServer) -> None:
    req = {"model": "tiny", "prompt": ["one", "two"], "max_tokens": 5, "n": 2,
           "temperature": 0.7, "top_p": 0.9}
    status, body = call(api, "POST", "/v1/completions", req)
    out = json.loads(body)
    assert status == 200 and [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    texts = [c["text"] for c in out["choices"]]
    assert len(set(texts)) == 4 and all(len(t.split()) == 5 for t in texts)
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 20, "total_tokens": 22}
    assert json.loads(call(api, "POST", "/v1/completions", req)[1])["choices"][0]["text"] == \
        texts[0]
    echo = json.loads(call(api, "POST", "/v1/completions",
                           {"prompt": "Say", "max_tokens": 3, "echo": True, "logprobs": 2})[1])
    choice = echo["choices"][0]
    assert choice["text"].startswith("Say ")
    assert len(choice["logprobs"]["tokens"]) == 3
    assert choice["logprobs"]["text_offset"][0] == 3
    assert all(len(top) == 2 for top in choice["logprobs"]["top_logprobs"])


def test_completions_stop_and_errors(api: server.ApiServer) -> None:
    full = json.loads(call(api, "POST", "/v1/completions",
                           {"prompt": "p", "max_tokens": 10})[1])["choices"][0]["text"]
    stop = full.split()[3]
    cut = json.loads(call(api, "POST", "/v1/completions",
                          {"prompt": "p", "max_tokens": 10, "stop": [stop]})[1])["choices"][0]
    assert cut["finish_reason"] == "stop" and full.startswith(cut["text"])
    assert stop not in cut["text"]
    assert call(api, "POST", "/v1/completions", {"prompt": "p", "max_tokens": 0})[0] == 400
    status, body = call(api, "POST", "/v1/completions", {"prompt": "p", "max_tokens": 9999})
    assert status == 400 and b"maximum context length is 4096" in body
    status, body = call(api, "POST", "/v1/completions", {"model": "other", "prompt": "p"})
    assert status == 404 and b"does not exist" in body
    assert call(api, "GET", "/nope")[0] == 404


def test_chat_stream_matches_non_stream(api: server.ApiServer) -> None:
    req = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6}
    full = json.loads(call(api, "POST", "/v1/chat/completions", req)[1])
    content = full["choices"][0]["message"]["content"]
    assert full["object"] == "chat.completion" and full["usage"]["completion_tokens"] == 6
    status, raw = call(api, "POST", "/v1/chat/completions",
                       {**req, "stream": True, "stream_options": {"include_usage": True}})
    chunks = events(raw)
    assert status == 200 and chunks[-1] == "[DONE]"
    parsed = [json.loads(c) for c in chunks[:-1]]
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(p["choices"][0]["delta"].get("content", "") for p in parsed
                       if p["choices"])
    assert streamed == content
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"]["completion_tokens"] == 6
    assert parsed[-2]["choices"][0]["finish_reason"] == "length"
    logprobs = json.loads(call(api, "POST", "/v1/chat/completions",
                               {**req, "logprobs": True, "top_logprobs": 3})[1])
    entries = logprobs["choices"][0]["logprobs"]["content"]
    assert len(entries) == 6 and len(entries[0]["top_logprobs"]) == 3


def test_completions_stream(api: server.ApiServer) -> None:
    status, raw = call(api, "POST", "/v1/completions",
                       {"prompt": "x", "max_tokens": 4, "stream": True})
    chunks = events(raw)
    assert status == 200 and chunks[-1] == "[DONE]" and len(chunks) == 5
    assert json.loads(chunks[-2])["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("api", [{"api_key": "sekret"}], indirect=True)
def test_api_key(api: server.ApiServer) -> None:
    assert call(api, "GET", "/v1/models")[0] == 401
    assert call(api, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert call(api, "GET", "/v1/models", headers={"Authorization": "Bearer sekret"})[0] == 200
    assert call(api, "POST", "/v1/completions", {"prompt": "p"})[0] == 401
    assert call(api, "GET", "/health")[0] == 200
    # A refused POST's body is read: the next request on the same connection is intact.
    host, port = api._httpd.server_address[:2]  # type: ignore[union-attr]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    for auth, status in (("Bearer wrong", 401), ("Bearer sekret", 200)):
        conn.request("POST", "/v1/completions", body=b'{"prompt": "p", "max_tokens": 1}',
                     headers={"Content-Type": "application/json", "Authorization": auth})
        response = conn.getresponse()
        response.read()
        assert response.status == status
    conn.close()
    assert call(api, "GET", "/metrics")[0] == 200


def test_many_concurrent_streams_all_complete(api: server.ApiServer) -> None:
    """More simultaneous connections than a default listen backlog (5) holds: none refused."""
    results: list[Any] = []

    def one() -> None:
        try:
            status, raw = call(api, "POST", "/v1/chat/completions", {
                "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True})
            results.append((status, events(raw)[-1]))
        except OSError as exc:
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(150)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [(200, "[DONE]")] * 150


def test_metrics_count_requests(api: server.ApiServer) -> None:
    call(api, "POST", "/v1/completions", {"prompt": "a b c", "max_tokens": 7})
    text = call(api, "GET", "/metrics")[1].decode()
    assert 'vllm:generation_tokens_total{model_name="tiny"} 7.0' in text
    assert 'vllm:prompt_tokens_total{model_name="tiny"} 3.0' in text
    assert "vllm:num_requests_running" in text


def _gauges(text: str) -> dict[str, float]:
    return {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


@pytest.mark.parametrize("api", [{"token_latency": 0.05, "max_model_len": 100}], indirect=True)
def test_metrics_load_while_a_request_is_in_flight(api: server.ApiServer) -> None:
    """running = requests in flight, none waits, KV use = their tokens / the stand-in's cache."""
    worker = threading.Thread(target=call, args=(api, "POST", "/v1/completions",
                                                 {"prompt": "a b c", "max_tokens": 20}))
    worker.start()
    deadline = time.monotonic() + 5
    while (busy := _gauges(call(api, "GET", "/metrics")[1].decode())).get(
            "vllm:num_requests_running") != 1.0:
        assert time.monotonic() < deadline, busy
        time.sleep(0.01)
    worker.join(10)
    idle = _gauges(call(api, "GET", "/metrics")[1].decode())
    assert busy["vllm:num_requests_waiting"] == 0.0
    assert busy["vllm:kv_cache_usage_perc"] == (3 + 20) / (100 * server.KV_SEQS)
    assert idle["vllm:num_requests_running"] == idle["vllm:kv_cache_usage_perc"] == 0.0
    assert idle["vllm:generation_tokens_total"] == 20.0


@pytest.mark.parametrize("api", [{"engine": "trtllm"}], indirect=True)
def test_trtllm_metrics_use_its_own_names(api: server.ApiServer) -> None:
    call(api, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 3})
    names = set(_gauges(call(api, "GET", "/prometheus/metrics")[1].decode()))
    assert {"trtllm_num_requests_running", "trtllm_num_requests_waiting",
            "trtllm_kv_cache_utilization", "trtllm_generation_tokens_total"} <= names


@pytest.mark.parametrize("api", [{"faults": Faults(break_streaming=True)}], indirect=True)
def test_fault_break_streaming(api: server.ApiServer) -> None:
    status, raw = call(api, "POST", "/v1/chat/completions",
                       {"messages": [{"role": "user", "content": "x"}], "max_tokens": 8,
                        "stream": True})
    chunks = events(raw)
    assert status == 200 and "[DONE]" not in chunks
    with pytest.raises(json.JSONDecodeError):
        json.loads(chunks[-1])


@pytest.mark.parametrize("api", [{"faults": Faults(hang_generation=True, no_metrics=True)}],
                         indirect=True)
def test_fault_hang_generation_and_no_metrics(api: server.ApiServer) -> None:
    assert call(api, "GET", "/health")[0] == 200
    with pytest.raises(TimeoutError):
        call(api, "POST", "/v1/completions", {"prompt": "p"}, timeout=0.5)
    assert call(api, "GET", "/metrics")[0] == 404


@pytest.mark.parametrize("api", [{"engine": "sglang", "metrics_enabled": False}], indirect=True)
def test_sglang_generate_and_metrics_off(api: server.ApiServer) -> None:
    status, body = call(api, "POST", "/generate",
                        {"text": "Hi", "sampling_params": {"max_new_tokens": 5}})
    out = json.loads(body)
    assert status == 200 and len(out["text"].split()) == 5
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 5}
    batch = json.loads(call(api, "POST", "/generate",
                            {"text": ["a", "b"], "sampling_params": {"max_new_tokens": 2}})[1])
    assert isinstance(batch, list) and len(batch) == 2
    status, raw = call(api, "POST", "/generate",
                       {"text": "Hi", "sampling_params": {"max_new_tokens": 5}, "stream": True})
    chunks = events(raw)
    assert chunks[-1] == "[DONE]" and json.loads(chunks[-2])["text"] == out["text"]
    assert call(api, "GET", "/metrics")[0] == 404


@pytest.mark.parametrize("api", [{"engine": "sglang", "metrics_enabled": True}], indirect=True)
def test_sglang_metrics_prefix(api: server.ApiServer) -> None:
    assert "sglang:num_running_reqs" in call(api, "GET", "/metrics")[1].decode()


def test_openai_client_streams(api: server.ApiServer) -> None:
    openai = pytest.importorskip("openai")
    host, port = api._httpd.server_address[:2]  # type: ignore[union-attr]
    client = openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="none")
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert len(text.split()) == 4
    done = client.completions.create(model="tiny", prompt="hi", max_tokens=3)
    assert done.usage is not None and done.usage.completion_tokens == 3


# ---- whole processes (local subprocesses, loopback) -------------------------------------------


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], cwd=STANDIN, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(STANDIN), **(env or {})})


def _wait_health(port: int, proc: subprocess.Popen[str], limit: float = 15) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no /health on {port}")


def test_vllm_process_banner_info_and_prompt_sigterm() -> None:
    port = free_port()
    proc = _spawn(["-m", "standin.vllm_cli", "serve", "org/m", "--host", "127.0.0.1", "--port",
                   str(port), "--x-flag", "a b"], {"HF_TOKEN": "hf_x", "NCCL_DEBUG": "INFO",
                                                     "HF_HUB_OFFLINE": ""})
    try:
        _wait_health(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/standin/info")
        info = json.loads(conn.getresponse().read())
        assert info["argv"][1:] == ["serve", "org/m", "--host", "127.0.0.1", "--port", str(port),
                                    "--x-flag", "a b"]
        assert info["env"]["HF_TOKEN"] == "<redacted>" and info["env"]["NCCL_DEBUG"] == "INFO"
        assert info["group"]["world_size"] == 1
        assert info["model_path"] is None  # online, a hub ID is served by name, never fetched
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - t0 < 1.5
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "STAND-IN ENGINE for tests: not vLLM"
    finally:
        proc.kill()


def test_sglang_two_ranks_and_rank_death() -> None:
    port, rdzv = free_port(), free_port()
    base = ["-m", "sglang.launch_server", "--model-path", "m", "--tp", "2", "--nnodes", "2",
            "--dist-init-addr", f"127.0.0.1:{rdzv}", "--port", str(port)]
    head = _spawn([*base, "--node-rank", "0"])
    other = _spawn([*base, "--node-rank", "1"])
    try:
        _wait_health(port, head)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/standin/info")
        group = json.loads(conn.getresponse().read())["group"]
        assert group["world_size"] == 2
        assert [m["node_rank"] for m in group["members"]] == [0, 1]
        other.kill()
        assert head.wait(5) == 1
        assert head.stdout is not None and "disconnected" in head.stdout.read()
    finally:
        head.kill()
        other.kill()


def test_fault_exit_after_and_slow_start() -> None:
    port = free_port()
    proc = _spawn(["-m", "standin.vllm_cli", "serve", "m", "--port", str(port)],
                  {"SLURMSERVE_STANDIN_FAULT": "slow-start=1,exit-after=2"})
    try:
        time.sleep(0.6)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        _wait_health(port, proc)
        assert proc.wait(5) == 1
    finally:
        proc.kill()


@pytest.mark.parametrize("api", [{"max_seqs": 2, "token_latency": 0.05}], indirect=True)
def test_max_seqs_serves_that_many_at_once_and_the_rest_wait(api: server.ApiServer) -> None:
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(call(
        api, "POST", "/v1/completions", {"prompt": "p", "max_tokens": 10})[0])) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # two generate (0.5 s each), two wait
    text = call(api, "GET", "/metrics")[1].decode()
    assert 'vllm:num_requests_running{model_name="tiny"} 2.0' in text
    assert 'vllm:num_requests_waiting{model_name="tiny"} 2.0' in text
    for t in threads:
        t.join(5)
    assert results == [200] * 4

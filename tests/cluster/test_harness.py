"""The sandbox itself: SLURM spans the nodes, each node has its own engine and address,
and real Ray, MPI and vLLM work across them."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sandboxlib import CommandFailed, Containers, Sandbox, load_image, run, tarball_image


def wait_until(what: str, probe: Callable[[], bool], timeout: float, on_fail: Callable[[], str]):
    """Poll PROBE every 0.5 s until it is true; fail with on_fail()'s text after TIMEOUT s."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout:.0f} s\n{on_fail()}")
        time.sleep(0.5)


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def http_post_json(url: str, body: dict, timeout: float = 60) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def test_srun_runs_one_task_per_node_address(sandbox: Sandbox) -> None:
    out = sandbox.host("srun", "-N3", "-w", "n[1-3]", "hostname", "-I").stdout.split()
    assert sorted(out) == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]


def test_task_prolog_points_each_step_at_its_own_dockerd(sandbox: Sandbox) -> None:
    out = sandbox.host(
        "srun", "-N3", "-w", "n[1-3]", "bash", "-c", 'echo "$SLURMD_NODENAME $DOCKER_HOST"'
    ).stdout.splitlines()
    assert sorted(out) == [f"n{i} unix:///run/docker-n{i}.sock" for i in (1, 2, 3)]


def test_gpus_per_node_are_allocatable(sandbox: Sandbox, tmp_path: Path) -> None:
    out = sandbox.host(
        "srun", "-N2", "-w", "n[1-2]", "--gpus-per-node=4", "bash", "-c",
        'echo "$SLURMD_NODENAME $CUDA_VISIBLE_DEVICES"',
    ).stdout.splitlines()
    assert sorted(out) == ["n1 0,1,2,3", "n2 0,1,2,3"]
    script = tmp_path / "gpus.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH -N2\n#SBATCH -w n[1-2]\n#SBATCH --gpus-per-node=4\n"
        f"#SBATCH -o {tmp_path}/gpus.out\nsrun hostname -I\n"
    )
    sandbox.host("sbatch", "--wait", str(script), timeout=120)
    assert sorted((tmp_path / "gpus.out").read_text().split()) == ["10.77.0.1", "10.77.0.2"]


def test_srun_mpi_pmix_spans_two_nodes(sandbox: Sandbox) -> None:
    out = sandbox.host(
        "srun", "-N2", "-w", "n[1-2]", "--mpi=pmix", "bash", "-c", 'echo "$SLURMD_NODENAME $PMIX_RANK"'
    ).stdout.splitlines()
    assert sorted(out) == ["n1 0", "n2 1"]


def test_exec_keeps_argv_and_exit_code(sandbox: Sandbox) -> None:
    out = sandbox.exec("n2", "printf", "[%s]\n", "a b", "$HOME", "c'd").stdout
    assert out == "[a b]\n[$HOME]\n[c'd]\n"
    assert sandbox.exec("n2", "sh", "-c", "exit 7", check=False).returncode == 7
    assert "10.77.0.2/24" in sandbox.exec("n2", "ip", "-br", "addr", "show", "eth0").stdout


def test_each_node_has_its_own_image_store(sandbox: Sandbox, standin_tarball: Path) -> None:
    image_id, _ = tarball_image(standin_tarball)
    other = sandbox.nodes[-1]
    # Ray and MPI tests load this image on n1 and n2; the last node is kept without it.
    if sandbox.docker(other, "image", "inspect", image_id, check=False).returncode == 0:
        sandbox.docker(other, "image", "rm", "-f", image_id)
    tag = load_image(sandbox, "n1", standin_tarball)
    assert sandbox.docker("n1", "image", "inspect", "-f", "{{.Id}}", tag).stdout.strip() == image_id
    listed = sandbox.docker(other, "image", "ls", "-q", "--no-trunc").stdout.split()
    assert image_id not in listed


def test_host_network_container_is_reachable_at_node_address(
    sandbox: Sandbox, standin_tarball: Path, containers: Containers
) -> None:
    image = load_image(sandbox, "n1", standin_tarball)
    token = uuid.uuid4().hex
    port = 18081
    name = containers.run(
        "n1", "http", image, "bash", "-c",
        'mkdir -p /srv && echo "$1" >/srv/token && exec python3 -m http.server "$2" -d /srv',
        "sh", token, str(port),
        docker_args=["--network", "host"],
    )
    url = f"http://{sandbox.addr('n1')}:{port}/token"
    wait_until(
        "HTTP 200 from the n1 container",
        lambda: http_get(url)[0] == 200,
        30,
        lambda: containers.logs("n1", name),
    )
    assert http_get(url)[1].decode().strip() == token
    # Node to node, across the bridge (the FORWARD rule's job).
    got = sandbox.exec("n2", "curl", "-fsS", "--max-time", "10", url).stdout.strip()
    assert got == token


RAY_PORTS = [
    "--node-manager-port=23001", "--object-manager-port=23002",
    "--min-worker-port=23100", "--max-worker-port=23199",
    "--dashboard-agent-listen-port=23003", "--dashboard-agent-grpc-port=23004",
    "--metrics-export-port=23005", "--runtime-env-agent-port=23006",
]


def test_ray_cluster_across_two_node_containers(
    sandbox: Sandbox, standin_tarball: Path, containers: Containers
) -> None:
    image = load_image(sandbox, "n1", standin_tarball)
    load_image(sandbox, "n2", standin_tarball)
    head_ip, worker_ip = sandbox.addr("n1"), sandbox.addr("n2")
    gcs = f"{head_ip}:26380"
    docker_args = ["--network", "host", "--shm-size=512m"]
    common = ["--num-cpus=1", "--num-gpus=2", "--object-store-memory=100000000",
              "--disable-usage-stats", "--block", *RAY_PORTS]
    head = containers.run(
        "n1", "ray-head", image, "ray", "start", "--head", f"--node-ip-address={head_ip}",
        "--port=26380", "--include-dashboard=false",
        *common, docker_args=docker_args,
    )
    worker = containers.run(
        "n2", "ray-worker", image, "ray", "start", f"--address={gcs}",
        f"--node-ip-address={worker_ip}", *common, docker_args=docker_args,
    )
    probe = (
        "import json, ray\n"
        f"ray.init(address={gcs!r}, logging_level='ERROR')\n"
        "nodes = [n for n in ray.nodes() if n['Alive']]\n"
        "@ray.remote(num_gpus=1)\n"
        "def where():\n"
        "    return ray.util.get_node_ip_address(), ray.get_gpu_ids()\n"
        "ips = set()\n"
        "if len(nodes) == 2:\n"
        "    for ip in sorted({n['NodeManagerAddress'] for n in nodes}):\n"
        "        res = {f'node:{ip}': 0.01}\n"
        "        ips.add(ray.get(where.options(resources=res).remote())[0])\n"
        "print(json.dumps({'nodes': sorted(n['NodeManagerAddress'] for n in nodes),\n"
        "    'gpus': ray.cluster_resources().get('GPU', 0), 'task_ips': sorted(ips)}))\n"
    )
    result: dict = {}

    def two_nodes() -> bool:
        for node, name in (("n1", head), ("n2", worker)):
            if not containers.running(node, name):
                pytest.fail(f"{name} exited:\n{containers.logs(node, name)}")
        proc = sandbox.docker("n1", "exec", head, "python3", "-c", probe, check=False)
        if proc.returncode == 0:
            result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        return len(result.get("nodes", [])) == 2

    wait_until(
        "a 2-node Ray cluster", two_nodes, 120,
        lambda: f"last: {result}\n{containers.logs('n1', head)}",
    )
    assert result["nodes"] == [head_ip, worker_ip]
    assert result["gpus"] == 4
    assert result["task_ips"] == [head_ip, worker_ip]


SSHD_PORT = 22022


def test_mpi_job_spans_two_node_containers(
    sandbox: Sandbox, standin_tarball: Path, containers: Containers, tmp_path: Path
) -> None:
    image = load_image(sandbox, "n1", standin_tarball)
    load_image(sandbox, "n2", standin_tarball)
    keys = tmp_path / "keys"
    keys.mkdir()
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id")])
    sshd = (
        'install -m 600 /keys/id.pub /root/.ssh/authorized_keys && '
        'exec /usr/sbin/sshd -D -e -p "$1"'
    )
    docker_args = ["--network", "host", "-v", f"{keys}:/keys:ro"]
    names = {
        node: containers.run(node, f"mpi-{node}", image, "bash", "-c", sshd, "sh",
                             str(SSHD_PORT), docker_args=docker_args)
        for node in ("n1", "n2")
    }
    for node, name in names.items():
        wait_until(
            f"sshd on {node}",
            lambda node=node: port_open(sandbox.addr(node), SSHD_PORT),
            30,
            lambda node=node, name=name: containers.logs(node, name),
        )
    program = (
        "import json, socket\n"
        "from mpi4py import MPI\n"
        "comm = MPI.COMM_WORLD\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.connect(('10.77.0.254', 9))\n"
        "addrs = comm.gather(s.getsockname()[0])\n"
        "total = comm.allreduce(comm.Get_rank() + 1)\n"
        "if comm.Get_rank() == 0:\n"
        "    print(json.dumps({'size': comm.Get_size(), 'addrs': addrs, 'sum': total}))\n"
    )
    try:
        proc = sandbox.docker(
            "n1", "exec", names["n1"], "mpirun", "--allow-run-as-root", "-np", "2",
            "-H", "n1,n2", "--mca", "plm_rsh_args",
            f"-p {SSHD_PORT} -i /keys/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "--mca", "btl_tcp_if_include", "10.77.0.0/24",
            "--mca", "oob_tcp_if_include", "10.77.0.0/24",
            "/usr/bin/python3", "-c", program,
            timeout=120,
        )
    except (CommandFailed, subprocess.TimeoutExpired) as err:
        pytest.fail(f"{err}\n--- n2 sshd ---\n{containers.logs('n2', names['n2'])}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"size": 2, "addrs": ["10.77.0.1", "10.77.0.2"], "sum": 3}


VLLM_PORT = 18000


def test_real_vllm_cpu_answers_chat_completions(
    sandbox: Sandbox, vllm_tarball: Path, containers: Containers
) -> None:
    image = load_image(sandbox, "n1", vllm_tarball)
    host = sandbox.addr("n1")
    name = containers.run(
        "n1", "vllm", image, "vllm", "serve", "/models/tiny", "--served-model-name", "tiny",
        "--max-model-len", "512", "--host", host, "--port", str(VLLM_PORT),
        # vLLM needs 160 MiB of /dev/shm; Docker's default is 64 MiB.
        docker_args=["--network", "host", "--shm-size=1g"],
    )
    base = f"http://{host}:{VLLM_PORT}"

    def healthy() -> bool:
        if not containers.running("n1", name):
            pytest.fail(f"vLLM container exited:\n{containers.logs('n1', name)}")
        return http_get(f"{base}/health")[0] == 200

    wait_until("vLLM /health", healthy, 300, lambda: containers.logs("n1", name))
    reply = http_post_json(
        f"{base}/v1/chat/completions",
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "min_tokens": 8,
            "ignore_eos": True,
        },
    )
    assert reply["choices"][0]["message"]["content"]
    assert reply["usage"]["completion_tokens"] == 8

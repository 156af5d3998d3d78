"""A recording `docker` for the fake SLURM (a test double, not Docker).

It keeps one image store and one container table per node (under FAKE_DOCKER_ROOT/<node>),
records every call in FAKE_DOCKER_LOG, and plays the engine for `docker run`: the container
that serves HTTP answers /health, /v1/models and /v1/completions on its `--port`, as an
OpenAI-compatible server would. FAKE_CONTROL (JSON) steers faults:

    {"model": "m", "docker_down": ["n2"], "exit": {"1": [0.3, 7]}, "healthy": false,
     "load_delay": 5, "load_fail": ["n2"], "prefetch_exit": 1,
     "delay": {"version": 3, "n2:ps-name": 30}}
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NODE = os.environ.get("SLURMD_NODENAME", "host")
ROOT = Path(os.environ["FAKE_DOCKER_ROOT"]) / NODE
CONTROL = json.loads(Path(os.environ["FAKE_CONTROL"]).read_text()) \
    if os.environ.get("FAKE_CONTROL") and Path(os.environ["FAKE_CONTROL"]).exists() else {}


def record(argv: list[str]) -> None:
    with open(os.environ["FAKE_DOCKER_LOG"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"node": NODE, "argv": argv}) + "\n")


def images() -> dict[str, list[str]]:
    path = ROOT / "images.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_images(data: dict[str, list[str]]) -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / "images.json").write_text(json.dumps(data))


def find_image(ref: str) -> str | None:
    for image_id, tags in images().items():
        if ref == image_id or ref in tags:
            return image_id
    return None


def containers() -> list[dict]:
    table = ROOT / "containers"
    table.mkdir(parents=True, exist_ok=True)
    found = []
    for path in table.glob("*.json"):
        entry = json.loads(path.read_text())
        try:
            os.kill(entry["pid"], 0)
        except OSError:
            path.unlink(missing_ok=True)  # the process is gone: so is the container (--rm)
            continue
        found.append(entry)
    return found


def matches(entry: dict, filters: list[str]) -> bool:
    for f in filters:
        key, _, value = f.partition("=")
        if key == "name" and not re.search(value, "/" + entry["name"]):
            return False
        if key == "label":
            label, has_value, wanted = value.partition("=")
            if label not in entry["labels"] or (has_value and entry["labels"][label] != wanted):
                return False
    return True


def ps(args: list[str]) -> int:
    filters = [args[i + 1] for i, a in enumerate(args) if a == "--filter"]
    fmt = args[args.index("--format") + 1] if "--format" in args else None
    for entry in containers():
        if not matches(entry, filters):
            continue
        if fmt:
            out = fmt.replace("{{.Names}}", entry["name"])
            labels = entry["labels"]
            out = re.sub(r'\{\{\.Label "([^"]+)"\}\}', lambda m, ls=labels: ls.get(m[1], ""),
                         out)
            print(out)
        else:
            print(entry["id"])
    return 0


def kill(entry: dict, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(entry["pid"], sig)


def rm(args: list[str]) -> int:
    for ref in [a for a in args if not a.startswith("-")]:
        for entry in containers():
            if ref in (entry["id"], entry["name"]):
                kill(entry, signal.SIGKILL)
                (ROOT / "containers" / f"{entry['name']}.json").unlink(missing_ok=True)
                print(ref)
    return 0


def stop(args: list[str]) -> int:
    grace = float(args[args.index("--time") + 1]) if "--time" in args else 10
    ref = args[-1]
    (ROOT / "stop-requests").mkdir(parents=True, exist_ok=True)
    (ROOT / "stop-requests" / ref).touch()  # a container still being created stops once it is
    for entry in containers():
        if ref in (entry["id"], entry["name"]):
            kill(entry, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and entry in containers():
                time.sleep(0.05)
            kill(entry, signal.SIGKILL)
    return 0


def load(args: list[str]) -> int:
    time.sleep(float(CONTROL.get("load_delay", 0)))
    if NODE in CONTROL.get("load_fail", []):
        print("Error processing tar file(exit status 1): unexpected EOF", file=sys.stderr)
        return 1
    from slurmserve.images import read_tarball

    if "--input" in args:
        path = args[args.index("--input") + 1]
    else:  # a stream on stdin (gunzipped by the node script): keep it to read the manifest
        path = str(ROOT / "stdin.tar")
        ROOT.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(sys.stdin.buffer.read())
    try:
        tarball = read_tarball(path)
    except Exception as exc:  # noqa: BLE001 - what docker says about a broken archive
        print(f"Error processing tar file: {exc}", file=sys.stderr)
        return 1
    data = images()
    data[tarball.image_id] = list(tarball.repo_tags)
    save_images(data)
    print(f"Loaded image ID: {tarball.image_id}")
    return 0


def delayed(verb: str, name: str = "") -> bool:
    """Sleep as FAKE_CONTROL's "delay" says ({"verb": s} or {"node:verb": s}); False when a
    `docker stop` for this container came meanwhile."""
    delays = CONTROL.get("delay", {})
    deadline = time.monotonic() + float(delays.get(f"{NODE}:{verb}", delays.get(verb, 0)))
    while time.monotonic() < deadline:
        if name and (ROOT / "stop-requests" / name).exists():
            return False
        time.sleep(0.05)
    return True


def run(args: list[str]) -> int:
    opts, labels, name = args, {}, ""
    i = 0
    while i < len(opts) and opts[i] != "--entrypoint":
        if opts[i] == "--label":
            key, _, value = opts[i + 1].partition("=")
            labels[key] = value
        if opts[i] == "--name":
            name = opts[i + 1]
        i += 1
    entrypoint, image, command = opts[i + 1], opts[i + 2], opts[i + 3:]
    if find_image(image) is None:
        print(f"Unable to find image '{image}' locally", file=sys.stderr)
        return 125
    if entrypoint == "sh" and not name:  # a throwaway check container: run the checks here
        for i, opt in enumerate(opts):  # its mounts are host paths here
            if opt == "--volume":
                source, target = opts[i + 1].split(":")[:2]
                command = [c.replace(target, source) for c in command]
        return subprocess.run(["sh", *command]).returncode
    if name and any(c["name"] == name for c in containers()):
        print(f'docker: Error response from daemon: Conflict. The container name "/{name}" is '
              'already in use by container "0123". You have to remove (or rename) that '
              'container to be able to reuse that name.', file=sys.stderr)
        return 125
    if not delayed("run", name):
        return 0
    if command[:1] and command[0].endswith("/hf_prefetch.py"):  # the hub pre-fetch: one-shot
        code = int(CONTROL.get("prefetch_exit", 0))
        print("slurmserve: 401 Unauthorized" if code else f"fetched {command[1]}")
        return code
    entry = {"id": f"{abs(hash(name)):x}"[:12], "name": name, "labels": labels, "pid": os.getpid()}
    (ROOT / "containers").mkdir(parents=True, exist_ok=True)
    (ROOT / "containers" / f"{name}.json").write_text(json.dumps(entry))
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    rank = labels.get("slurmserve.rank", "0")
    print(f"fake engine {entrypoint} {' '.join(command)} (rank {rank} on {NODE})", flush=True)
    if "--port" in command and CONTROL.get("healthy", True) and rank == "0":
        serve(int(command[command.index("--port") + 1]), CONTROL.get("model", ""))
    exit_after = CONTROL.get("exit", {}).get(rank)
    deadline = time.monotonic() + exit_after[0] if exit_after else None
    while not stopped.is_set():
        if deadline and time.monotonic() > deadline:
            print(f"fake engine: rank {rank} exits with code {exit_after[1]}", flush=True)
            (ROOT / "containers" / f"{name}.json").unlink(missing_ok=True)
            return int(exit_after[1])
        stopped.wait(0.05)
    (ROOT / "containers" / f"{name}.json").unlink(missing_ok=True)
    return 0


def serve(port: int, model: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self.reply({})
            elif self.path == "/v1/models":
                self.reply({"object": "list", "data": [{"id": model, "object": "model"}]})
            else:
                self.send_error(404)

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.reply({"choices": [{"text": "x", "index": 0}], "model": model})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main(argv: list[str]) -> int:
    record(argv)
    if NODE in CONTROL.get("docker_down", []):
        print("Cannot connect to the Docker daemon at unix:///run/docker.sock", file=sys.stderr)
        return 1
    verb, args = argv[0], argv[1:]
    if verb == "ps" and any(a.startswith("name=") for a in args):
        delayed("ps-name")  # node.sh's same-name check, just before it starts the container
    elif verb != "run":
        delayed(verb)
    if verb == "version":
        print("20.10.24-fake")
        return 0
    if verb == "image" and args[0] == "inspect":
        image_id = find_image(args[-1])
        if image_id is None:
            print(f"Error: No such image: {args[-1]}", file=sys.stderr)
            return 1
        print(image_id)
        return 0
    if verb == "pull":
        data = images()
        data.setdefault(args[-1], [args[-1]])
        save_images(data)
        return 0
    handlers = {"ps": ps, "rm": rm, "stop": stop, "load": load, "run": run}
    return handlers[verb](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

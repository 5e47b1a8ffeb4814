"""What batch jobs shared through Redis cost, against jobs in one replica's own SQLite store, in one run.

python3 tools/bench_jobs.py [--binary target/release/samserve] [--model tests/fixtures/models/tiny-lean]
                            [--images 60] [--repeats 3] [--threads 1] [--poll-s 0.05] [--json OUT]

Two measurements, each on two jobs of the same `--images` images (fixture images under distinct file names): an
"everything" job (points_per_side 8) and a cheap "prompts" job (one point per image).

1. Per-item overhead of the shared queue. One replica (`--job-workers 1`) without Redis (`--data-dir`, SQLite),
   one with `--redis` (images kept in Redis, the default) and one with `--redis` and `--blob-store file:///DIR`.
   Each job is timed from the start of its submission to the first poll (every --poll-s) that reads `succeeded`,
   so to within --poll-s / --images per image; the table gives the wall time, the time to submit, the time per
   image and, for the Redis setups, the extra time per image over the local store.
2. Throughput of 1 against 3 replicas sharing one Redis (each `--job-workers 1`), the job submitted to the first
   replica: images/s and their ratio. Replicas on one machine share its cores (the tool prints how many), so the
   tool also prints the scaling that replicas on separate machines would reach, from the measured time per image t
   (local store) and the Redis overhead per image o: N replicas -> N * t / (t + o) times one local replica.

Every measurement starts its own redis-server (free port, temporary --dir, `--save ''`, `appendonly yes`,
`appendfsync everysec`) and its own samserve processes, which are warmed with a small job first. Setups are
interleaved within each repeat and the tables give medians over the repeats (the per-image overhead is the median of
the paired differences within a repeat). All processes are stopped at the end, also on errors and Ctrl-C.

Needs only the Python standard library, /usr/bin/redis-server (or --redis-server) and a built samserve
(`cargo build --release`); samserve finds the ONNX Runtime library as usual (`--ort-lib` / SAMSERVE_ORT_LIB /
ORT_DYLIB_PATH from the environment, else the one the build fetched).
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
# Ordinary photos of a few sizes and formats; the job cycles through them under distinct file names.
IMAGE_FILES = ["landscape.png", "portrait.jpg", "gray.png", "rgba.png", "exif_rotated.jpg"]
# A point inside every image above (the smallest is 300 px wide).
PROMPT_POINT = [40, 40]
EVERYTHING_SPEC = {
    "mode": "everything",
    "everything": {"points_per_side": 8, "pred_iou_thresh": 0.2, "stability_score_thresh": 0.0},
}
MODES = ["prompts", "everything"]
SETUPS = ["local", "redis", "redis+file"]

# Every process this tool started, stopped by stop_all() at the end whatever happens.
PROCESSES = []


# ---- processes ----------------------------------------------------------------------------------------------------


def start(args, **options):
    # A session of its own: Ctrl-C reaches only this tool, which then stops the children itself.
    process = subprocess.Popen(args, start_new_session=True, **options)
    PROCESSES.append(process)
    return process


def stop(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process in PROCESSES:
        PROCESSES.remove(process)


def stop_all():
    for process in list(reversed(PROCESSES)):
        stop(process)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Redis:
    """A private redis-server with the persistence the docs recommend for shared jobs."""

    def __init__(self, executable):
        self.dir = tempfile.TemporaryDirectory(prefix="bench-jobs-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process = start(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir.name, "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def close(self):
        stop(self.process)
        self.dir.cleanup()


class Replica:
    """One `samserve serve` on a free port, with its own data folder."""

    def __init__(self, binary, model, threads, redis_url=None, blob_dir=None):
        self.data = tempfile.TemporaryDirectory(prefix="bench-jobs-data-")
        command = [binary, "--device", "cpu", "--threads", str(threads), "serve", "--port", "0",
                   "--data-dir", self.data.name, "--model", model, "--job-workers", "1"]
        if redis_url:
            command += ["--redis", redis_url, "--job-claim-timeout-s", "60"]
        if blob_dir:
            command += ["--blob-store", "file://" + blob_dir]
        self.log = tempfile.TemporaryFile()
        self.process = start(command, stdout=subprocess.PIPE, stderr=self.log, text=True,
                             env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        first = self.process.stdout.readline()
        if "listening on" not in first:
            raise RuntimeError(f"samserve did not start: {first!r}\n{self.stderr()}")
        self.base = first.split()[-1]
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(self.base + "/readyz", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"samserve never became ready\n{self.stderr()}")
            time.sleep(0.05)

    def stderr(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def close(self):
        stop(self.process)
        self.log.close()
        self.data.cleanup()


# ---- HTTP ---------------------------------------------------------------------------------------------------------


def get_json(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def multipart(files, spec):
    """A multipart/form-data body: one `image` part per (file name, bytes), then the `spec` field."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n'
        f"Content-Type: application/json\r\n\r\n{json.dumps(spec)}\r\n".encode()
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def run_job(base, model, body, content_type, timeout_s, poll_s):
    """Submits a job, polls it to its end: wall seconds (submit to `succeeded`), seconds to submit, last status."""
    started = time.perf_counter()
    request = urllib.request.Request(f"{base}/v1/jobs?model={model}", data=body,
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as response:
        job = json.loads(response.read())
    submitted = time.perf_counter() - started
    while True:
        status = get_json(f"{base}/v1/jobs/{job['job_id']}")
        if status["status"] in ("succeeded", "failed", "cancelled"):
            break
        if time.perf_counter() - started > timeout_s:
            status["status"] = f"stuck ({status['status']}, {status['done']}/{status['total']} done)"
            break
        time.sleep(poll_s)
    wall = time.perf_counter() - started
    status["job_id"] = job["job_id"]
    return wall, submitted, status


# ---- the jobs -----------------------------------------------------------------------------------------------------


def job_files(count):
    """`count` (file name, bytes) pairs cycling through the fixture images, each name distinct."""
    contents = [(name, (IMAGES / name).read_bytes()) for name in IMAGE_FILES]
    return [(f"img-{i:04d}-{contents[i % len(contents)][0]}", contents[i % len(contents)][1]) for i in range(count)]


def job_spec(mode, files):
    if mode == "everything":
        return EVERYTHING_SPEC
    return {"mode": "prompts",
            "prompts": {name: [{"points": [PROMPT_POINT], "labels": [1]}] for name, _ in files}}


class Jobs:
    """The bodies of the measured jobs and of the warm-up job, built once."""

    def __init__(self, count):
        files = job_files(count)
        self.bodies = {mode: multipart(files, job_spec(mode, files)) for mode in MODES}
        warm = job_files(2)
        self.warmup = {mode: multipart(warm, job_spec(mode, warm)) for mode in MODES}


def images_finished(base):
    """samserve_job_images_total of one replica (all outcomes): the job images it processed so far."""
    with urllib.request.urlopen(base + "/metrics", timeout=60) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("samserve_job_images_total"))


def served_model(base):
    """The name of the model a replica serves (it is given exactly one --model)."""
    return get_json(base + "/v1/models")["models"][0]["name"]


# ---- measurements -------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, options):
        self.options = options
        self.jobs = Jobs(options.images)
        self.problems = []

    def measure(self, replicas, label):
        """Warms every replica, then times each mode's job submitted to the first replica."""
        name = served_model(replicas[0].base)
        for replica in replicas:
            for mode in MODES:
                _, _, status = run_job(replica.base, name, *self.jobs.warmup[mode], self.options.job_timeout_s,
                                       self.options.poll_s)
                self.check(status, f"{label} warm-up {mode}")
        results = {}
        for mode in MODES:
            before = [images_finished(replica.base) for replica in replicas]
            wall, submitted, status = run_job(replicas[0].base, name, *self.jobs.bodies[mode],
                                              self.options.job_timeout_s, self.options.poll_s)
            ok = self.check(status, f"{label} {mode}")
            # Which replica processed how many of the job's images. A worker counts an image just after recording
            # it, so the last count may lag the job's end by a moment.
            deadline = time.monotonic() + 2
            while True:
                per_replica = [int(images_finished(r.base) - b) for r, b in zip(replicas, before)]
                if sum(per_replica) >= self.options.images or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            results[mode] = {"wall_s": wall, "submit_s": submitted, "ok": ok, "images_per_replica": per_replica}
            if ok:
                results[mode]["annotations"] = self.count_annotations(replicas[0].base, status["job_id"])
        return results

    def check(self, status, label):
        if status["status"] == "succeeded" and status["failed"] == 0:
            return True
        problem = f"{label}: status {status['status']}, {status.get('failed')} failed, errors {status.get('errors')}"
        print("  !! " + problem, flush=True)
        self.problems.append(problem)
        return status["status"] == "succeeded"

    def count_annotations(self, base, job_id):
        results = get_json(f"{base}/v1/jobs/{job_id}/results")
        if len(results["images"]) != self.options.images:
            self.problems.append(f"job {job_id}: {len(results['images'])} images in the results")
        return len(results["annotations"])

    def one_replica(self, setup):
        """Measurement 1: one replica, local store or Redis (images in Redis or in a file blob store)."""
        redis = blobs = None
        replicas = []
        try:
            if setup != "local":
                redis = Redis(self.options.redis_server)
            if setup == "redis+file":
                blobs = tempfile.TemporaryDirectory(prefix="bench-jobs-blobs-")
            replicas.append(Replica(self.options.binary, self.options.model, self.options.threads,
                                    redis.url if redis else None, blobs.name if blobs else None))
            return self.measure(replicas, setup)
        finally:
            for replica in replicas:
                replica.close()
            if redis:
                redis.close()
            if blobs:
                blobs.cleanup()

    def shared(self, count):
        """Measurement 2: `count` replicas on one Redis, the job submitted to the first."""
        redis = Redis(self.options.redis_server)
        replicas = []
        try:
            for _ in range(count):
                replicas.append(Replica(self.options.binary, self.options.model, self.options.threads, redis.url))
            return self.measure(replicas, f"{count} replicas")
        finally:
            for replica in replicas:
                replica.close()
            redis.close()


# ---- report -------------------------------------------------------------------------------------------------------


def median_of(runs, setup, mode, key="wall_s"):
    values = [run[setup][mode][key] for run in runs if run[setup][mode]["ok"]]
    return statistics.median(values) if values else float("nan")


def summarize(options, overhead_runs, scaling_runs):
    n = options.images
    summary = {"overhead": {}, "scaling": {}}
    for mode in MODES:
        rows = {}
        for setup in SETUPS:
            wall = median_of(overhead_runs, setup, mode)
            rows[setup] = {"wall_s": wall, "ms_per_image": wall / n * 1e3,
                           "submit_s": median_of(overhead_runs, setup, mode, "submit_s")}
            if setup != "local":
                # Paired within each repeat: the setups ran one after the other.
                differences = [(run[setup][mode]["wall_s"] - run["local"][mode]["wall_s"]) / n * 1e3
                               for run in overhead_runs if run[setup][mode]["ok"] and run["local"][mode]["ok"]]
                rows[setup]["overhead_ms_per_image"] = (statistics.median(differences) if differences
                                                        else float("nan"))
        summary["overhead"][mode] = rows

        one = median_of(scaling_runs, "1", mode)
        three = median_of(scaling_runs, "3", mode)
        t = rows["local"]["ms_per_image"]
        o = rows["redis"]["overhead_ms_per_image"]
        summary["scaling"][mode] = {
            "images_per_s_1": n / one,
            "images_per_s_3": n / three,
            "ratio_3_to_1": one / three,
            "t_ms": t,
            "o_ms": o,
            "separate_machines": {str(k): k * t / (t + o) for k in (1, 2, 3, 4, 8)},
        }
    return summary


def print_report(options, summary, cores, problems):
    n = options.images
    print()
    print(f"samserve batch jobs: {n} images per job, median of {options.repeats} repeats, "
          f"{options.threads} ONNX Runtime thread(s) per replica, {cores} CPU cores (os.cpu_count())")
    print(f"binary {options.binary}, model {options.model}")
    print()
    print("1. one replica: local SQLite store against the shared Redis queue")
    print(f"{'mode':<11} {'setup':<11} {'wall s':>8} {'submit s':>9} {'ms/image':>9} {'overhead ms/image':>18}")
    for mode in MODES:
        for setup in SETUPS:
            row = summary["overhead"][mode][setup]
            over = row.get("overhead_ms_per_image")
            over_text = f"{over:+.2f}" if over is not None else "-"
            print(f"{mode:<11} {setup:<11} {row['wall_s']:8.2f} {row['submit_s']:9.3f} "
                  f"{row['ms_per_image']:9.2f} {over_text:>18}")
    print()
    print("2. throughput of replicas sharing one Redis (--job-workers 1 each, job submitted to one)")
    print(f"{'mode':<11} {'1 replica img/s':>16} {'3 replicas img/s':>17} {'3 / 1':>7}"
          f"   separate machines, N * t / (t + o): N=2, 3, 4, 8")
    for mode in MODES:
        row = summary["scaling"][mode]
        ideal = row["separate_machines"]
        print(f"{mode:<11} {row['images_per_s_1']:16.2f} {row['images_per_s_3']:17.2f} "
              f"{row['ratio_3_to_1']:7.2f}   " + ", ".join(f"{ideal[k]:.2f}x" for k in ("2", "3", "4", "8")))
    print()
    print(f"On this machine the 3 replicas share {cores} cores, so 3 / 1 is bounded by about {min(3, cores)}x "
          "(less, as each replica's HTTP and Redis work and redis-server take cores too).")
    print("Separate machines, against one replica with the local store: t = its ms/image, o = the 'redis' overhead")
    print("ms/image above (" + "; ".join(f"{mode} t {summary['scaling'][mode]['t_ms']:.2f}, "
                                      f"o {summary['scaling'][mode]['o_ms']:+.2f}" for mode in MODES) + ").")
    if any(summary["scaling"][mode]["o_ms"] < 0 for mode in MODES):
        print("A negative o: the shared queue was faster per image than the local store in this run, so the")
        print("separate-machines figures exceed N (against one local replica); compare the runs in --json for spread.")
    if problems:
        print()
        print("Problems:")
        for problem in problems:
            print("  " + problem)


def progress(label, results):
    """One line per measurement: each job's wall time and how many of its images each replica processed."""
    jobs = [f"{mode} {results[mode]['wall_s']:.2f} s (images by replica {results[mode]['images_per_replica']})"
            for mode in MODES]
    print(f"  {label:<12} " + ", ".join(jobs), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "samserve"))
    parser.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "models" / "tiny-lean"))
    parser.add_argument("--images", type=int, default=60, help="images per job")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per replica")
    parser.add_argument("--redis-server", default="/usr/bin/redis-server")
    parser.add_argument("--job-timeout-s", type=float, default=900, help="a job running longer counts as stuck")
    parser.add_argument("--poll-s", type=float, default=0.05, help="seconds between two GET /v1/jobs/{id}")
    parser.add_argument("--json", help="write the results (medians and every run) to this file")
    options = parser.parse_args()
    # SIGTERM ends the tool as Ctrl-C does, through the `finally` that stops every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    bench = Bench(options)
    overhead_runs, scaling_runs = [], []
    try:
        for repeat in range(options.repeats):
            print(f"repeat {repeat + 1}/{options.repeats}", flush=True)
            run = {}
            for setup in SETUPS:
                run[setup] = bench.one_replica(setup)
                progress(setup, run[setup])
            overhead_runs.append(run)
            run = {}
            for count in ("1", "3"):
                run[count] = bench.shared(int(count))
                progress(f"{count} replica(s)", run[count])
            scaling_runs.append(run)
    except KeyboardInterrupt:
        print("interrupted: stopping every process", file=sys.stderr)
        sys.exit(130)
    finally:
        stop_all()

    cores = os.cpu_count()
    summary = summarize(options, overhead_runs, scaling_runs)
    print_report(options, summary, cores, bench.problems)
    if options.json:
        record = {"images": options.images, "repeats": options.repeats, "threads": options.threads,
                  "cpu_count": cores, "binary": options.binary, "model": options.model, **summary,
                  "runs": {"overhead": overhead_runs, "scaling": scaling_runs}, "problems": bench.problems}
        Path(options.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

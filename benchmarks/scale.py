"""`make scale`: what the pipeline's own bookkeeping costs as the number of shards grows.

For each N (default 10, 100, 1000) it writes an N-shard corpus from the packaged sample text (two short
documents per shard) and runs `tledit run` in a fresh process, exactly as a user does, five times:

- first_run:   everything from nothing;
- noop:        a second `tledit run` with nothing changed;
- backfill:    a new threshold p (re-edit, n-grams, health; no scoring);
- refresh_one: one source file changed: its shard's chain and distribution_health redone;
- health:      distribution_health alone, rebuilt from the lake (its DuckDB file removed).

The prior is small on purpose (a config of a few layers with the bundled tokenizer, random weights), so
the model's compute stays small and the pipeline's own costs show. Each phase reports wall seconds,
engine seconds (time inside tledit_pipeline calls: reading, scoring, editing, n-grams, health SQL),
overhead per shard ((wall - engine) / N: Dagster, planning, bookkeeping) and the child's peak RSS.
At the largest N it also starts `dagster-webserver` on the instance and times the GraphQL queries behind
an asset's page and its partition health bar. It prints a table, writes a log-log chart (seconds per
phase against N) as a PNG beside the JSON file, and ends with one JSON line.

`--instance postgres` keeps the Dagster instance on a PostgreSQL server it starts and stops itself (the
tests' throwaway server, tests/postgres.py: a fresh database per N); `--instance sqlite postgres` measures both
in one run, side by side (then the JSON line holds one set of keys per instance under "instances"). The
instance's size is reported per shard and per backfill (what the backfill phase added).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

PHASES = ("first_run", "noop", "backfill", "refresh_one", "health")
DOCS_PER_SHARD = 2
THRESHOLD = 0.99
BACKFILL_THRESHOLD = 0.95
# Targets of the issue, at the largest N against the one before it (see docs/deploy.md).
TARGETS = {"noop_s": 20.0, "backfill_s": 90.0, "refresh_one_s": 30.0, "per_shard_ratio": 1.5, "rss_ratio": 1.2}
REPO = Path(__file__).resolve().parent.parent


# --- the corpus and the prior ------------------------------------------------------------------------


def sample_documents() -> list[str]:
    """Short human texts from the packaged sample (the fortunes the demo uses), in a fixed order."""
    from tledit_pipeline.sample import FORTUNE_SETS, fortunes

    return [d["text"] for d in fortunes(FORTUNE_SETS)]


def write_corpus(folder: Path, n: int, docs: list[str]) -> list[Path]:
    """n shard files of DOCS_PER_SHARD documents each (the pool is cycled; ids stay distinct per shard)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rows = [{"text": docs[(i * DOCS_PER_SHARD + j) % len(docs)], "n": i * DOCS_PER_SHARD + j} for j in range(DOCS_PER_SHARD)]
        path = folder / f"shard-{i:05d}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(path)
    return paths


def build_small_prior(folder: Path, models_dir: Path, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """A Llama config of `layers` layers over the bundled prior's tokenizer, random weights (seeded)."""
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tledit_pipeline.prior import convert_bundled

    tok = AutoTokenizer.from_pretrained(str(convert_bundled(models_dir)))
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # a sharper output distribution, so some tokens are eligible at p
        model.lm_head.weight.mul_(40.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# --- one phase: `tledit run` in a child process ---------------------------------------------------------


def child(argv: list[str], report: str) -> int:
    """The child: `tledit run argv` with every tledit_pipeline function the assets call timed."""
    import functools
    import importlib
    import types

    import assets.cli as cli
    import assets.definitions  # noqa: F401  (loads every asset module)

    spent = {"s": 0.0, "depth": 0}

    def timed(fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            spent["depth"] += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent["depth"] -= 1
                if spent["depth"] == 0:
                    spent["s"] += time.perf_counter() - t

        return wrapper

    for name in [m for m in sys.modules if m.startswith("assets.")]:
        module = importlib.import_module(name)
        for attr, value in list(vars(module).items()):
            if isinstance(value, types.FunctionType) and (value.__module__ or "").startswith("tledit_pipeline."):
                setattr(module, attr, timed(value))
    _time_ray_pool(spent)
    t0 = time.perf_counter()
    code = cli.main(argv)
    Path(report).write_text(json.dumps({"engine_s": spent["s"], "wall_in_process_s": time.perf_counter() - t0, "code": code}))
    return code


def _time_ray_pool(spent: dict) -> None:
    """Engine `ray`: the driver's wait for the scoring actors' shards is engine time (the actors do the work)."""
    try:
        from tledit_pipeline.cluster import Pool
    except ImportError:
        return
    real = Pool.run

    def run(self, *a, **k):
        shards = real(self, *a, **k)
        while True:
            t = time.perf_counter()
            try:
                item = next(shards)
            except StopIteration:
                return
            finally:
                spent["s"] += time.perf_counter() - t
            yield item

    Pool.run = run  # type: ignore[method-assign]


def _first(pattern: str, log: Path, last: bool = False) -> int | None:
    """An integer a run printed (the summary's tokens, the Ray pool's prior loads)."""
    import re

    found = re.findall(pattern, log.read_text(errors="replace")) if log.exists() else []
    return int(found[-1 if last else 0].replace(",", "")) if found else None


def run_phase(argv: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Wall seconds, engine seconds, exit code and peak RSS of one `tledit run` in a fresh process."""
    report = log.with_suffix(".json")
    cmd = [sys.executable, "-m", "benchmarks.scale", "--child", json.dumps(argv), "--report", str(report)]
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    engine = json.loads(report.read_text())["engine_s"] if report.exists() else float("nan")
    return {"wall_s": wall, "engine_s": engine, "code": code, "peak_rss_mb": usage.ru_maxrss / 1024}


def tree_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


# --- the UI's queries ------------------------------------------------------------------------------------

ASSET_PAGE = """
query AssetPage($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode {
    id description opName isPartitioned partitionDefinition { description }
    dependencyKeys { path } dependedByKeys { path }
    assetMaterializations(limit: 1) { runId partition timestamp metadataEntries { label } }
  } }
  assetOrError(assetKey: $key) { ... on Asset {
    assetMaterializations(limit: 100) { runId partition timestamp tags { key value } }
  } }
}
"""
PARTITION_HEALTH = """
query PartitionHealth($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode {
    partitionKeysByDimension { name partitionKeys }
    partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    assetPartitionStatuses { ... on DefaultPartitionStatuses {
      materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions
    } }
  } }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        json.dumps({"query": query, "variables": variables}).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=600) as resp:
        body = json.loads(resp.read())
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors'][:1]}")
    return body["data"]


def time_ui(env: dict[str, str], log: Path, asset: str = "ngram_profile", repeats: int = 3) -> dict[str, float]:
    """Median seconds of each query against a real dagster-webserver on the instance (after one warm-up)."""
    port = _free_port()
    web = Path(sys.executable).parent / "dagster-webserver"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(web), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 300
        while True:
            try:
                _graphql(port, "{ version }", {})
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"dagster-webserver did not start (see {log})") from None
                time.sleep(1)
        out: dict[str, float] = {}
        for name, query in (("asset_page", ASSET_PAGE), ("partition_health_bar", PARTITION_HEALTH)):
            variables = {"key": {"path": [asset]}}
            _graphql(port, query, variables)  # warm-up: the code location and caches
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                data = _graphql(port, query, variables)
                times.append(time.perf_counter() - t)
            out[f"{name}_s"] = sorted(times)[len(times) // 2]
            if name == "partition_health_bar":
                stats = data["assetNodeOrError"]["partitionStats"]
                out["partitions_materialized"] = stats["numMaterialized"]
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- the benchmark ---------------------------------------------------------------------------------------


class Instance:
    """Where the Dagster instance of one measurement lives: local SQLite, or a database on a PostgreSQL server."""

    def __init__(self, name: str, server=None):
        self.name, self.server = name, server

    def setup(self, n: int) -> tuple[list[str], dict[str, str]]:
        """The first run's extra arguments and the environment every phase gets (the password as PGPASSWORD)."""
        if self.server is None:
            return [], {}
        self.database = self.server.create_database(f"scale_n{n}_{os.getpid()}")
        return ["--dagster-postgres-url", self.server.url(self.database, password=False)], {"PGPASSWORD": self.server.password}

    def size_mb(self, home: Path) -> float:
        local = tree_mb(home / "dagster_home")
        if self.server is None:
            return local
        (size,) = self.server.query(f"SELECT pg_database_size('{self.database}')")[0]
        return local + size / 2**20

    def runs(self, home: Path) -> int:
        if self.server is None:
            return len(list((home / "dagster_home" / "history" / "runs").glob("*.db"))) - 1  # less index.db
        return self.server.query("SELECT count(*) FROM runs", self.database)[0][0]


def measure(
    n: int,
    work: Path,
    prior: Path,
    docs: list[str],
    base_env: dict[str, str],
    ui: bool,
    instance: Instance | None = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    instance = instance or Instance("sqlite")
    folder = work / instance.name / f"n{n}"
    home, source = folder / "home", folder / "source"
    shutil.rmtree(folder, ignore_errors=True)
    files = write_corpus(source, n, docs)
    extra, instance_env = instance.setup(n)
    env = base_env | {"TLEDIT_HOME": str(home)} | instance_env
    common = ["run", "--home", str(home)]
    first = ["--source", str(source), "--model", str(prior), "--threshold", str(THRESHOLD)]
    result: dict[str, Any] = {"shards": n, "phases": {}}
    if ray_address:  # the same first run on the local engine, beside it: what going through Ray costs
        local = folder / "local-home"
        r = run_phase(["run", "--home", str(local), *first], base_env | {"TLEDIT_HOME": str(local)}, folder / "local.log")
        r["tokens"] = _first(r"tokens\s+([\d,]+)", folder / "local.log")
        result["local_first_run"] = r
        print(f"  N={n:>5} {'local first':<12} {r['wall_s']:8.1f} s wall {r['engine_s']:7.1f} s engine", flush=True)
        first += ["--engine", "ray", "--ray-address", ray_address]
    argvs = {
        "first_run": common + first + extra,
        "noop": common,
        "backfill": common + ["--threshold", str(BACKFILL_THRESHOLD)],
        "refresh_one": common,
        "health": common,
    }
    for phase in PHASES:
        if phase == "refresh_one":  # one source file changed: a document replaced
            rows = [json.loads(line) for line in files[0].read_text().splitlines()]
            rows[0]["text"] = docs[(n * DOCS_PER_SHARD) % len(docs)]
            files[0].write_text("".join(json.dumps(r) + "\n" for r in rows))
        if phase == "health":
            (home / "tledit.duckdb").unlink(missing_ok=True)
        if phase == "backfill":
            before_backfill = instance.size_mb(home)
        r = run_phase(argvs[phase], env, folder / f"{phase}.log")
        if phase == "backfill":
            result["backfill_instance_mb"] = instance.size_mb(home) - before_backfill
        r["overhead_per_shard_s"] = (r["wall_s"] - r["engine_s"]) / n
        result["phases"][phase] = r
        print(
            f"  {instance.name:<8} N={n:>5} {phase:<12} {r['wall_s']:8.1f} s wall {r['engine_s']:7.1f} s engine "
            f"{r['overhead_per_shard_s'] * 1000:8.1f} ms/shard overhead {r['peak_rss_mb']:7.0f} MB"
            + ("" if r["code"] == 0 else f"  exit {r['code']} (see {folder / f'{phase}.log'})"),
            flush=True,
        )
    result["tokens"] = _first(r"tokens\s+([\d,]+)", folder / "first_run.log")
    result["prior_loads"] = _first(r"prior loaded (\d+) time", folder / "first_run.log", last=True)
    result["dagster_home_mb"] = instance.size_mb(home)  # on PostgreSQL: the database plus the local dagster_home
    result["lake_mb"] = tree_mb(home / "lake")
    result["runs"] = instance.runs(home)
    if ui:
        try:
            result["ui"] = time_ui(env | {"DAGSTER_HOME": str(home / "dagster_home")}, folder / "webserver.log")
        except Exception as exc:  # reported, not fatal: the phases above are the benchmark
            result["ui"] = {"error": str(exc)}
    return result


def chart(results: list[dict], path: Path) -> Path | None:
    """Seconds per phase against N, log-log, with the linear-cost slope for reference."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is not installed (make scale installs it)", file=sys.stderr)
        return None
    ns = [r["shards"] for r in results]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for phase in PHASES:
        ax.plot(ns, [r["phases"][phase]["wall_s"] for r in results], marker="o", label=phase)
    first = results[0]["phases"]["first_run"]["wall_s"]
    ax.plot(ns, [first * n / ns[0] for n in ns], color="grey", linestyle=":", label="linear in N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("shards N")
    ax.set_ylabel("wall seconds (tledit run)")
    ax.set_title("tledit run at N shards (small prior)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def summary_json(results: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"shards": [r["shards"] for r in results]}
    for phase in PHASES:
        out[f"{phase}_s"] = [round(r["phases"][phase]["wall_s"], 2) for r in results]
    out["engine_s"] = {p: [round(r["phases"][p]["engine_s"], 2) for r in results] for p in PHASES}
    out["peak_rss_mb"] = [round(max(r["phases"][p]["peak_rss_mb"] for p in PHASES), 1) for r in results]
    out["overhead_per_shard_s"] = {p: [round(r["phases"][p]["overhead_per_shard_s"], 4) for r in results] for p in PHASES}
    out["dagster_home_mb"] = [round(r["dagster_home_mb"], 1) for r in results]
    out["instance_kb_per_shard"] = [round(r["dagster_home_mb"] * 1024 / r["shards"], 1) for r in results]
    out["backfill_instance_mb"] = [round(r["backfill_instance_mb"], 2) for r in results]
    out["backfill_instance_kb_per_shard"] = [round(r["backfill_instance_mb"] * 1024 / r["shards"], 1) for r in results]
    out["lake_mb"] = [round(r["lake_mb"], 1) for r in results]
    out["runs"] = [r["runs"] for r in results]
    out["exit_codes"] = {p: [r["phases"][p]["code"] for r in results] for p in PHASES}
    out["first_run_tokens_per_s"] = [
        round(r["tokens"] / r["phases"]["first_run"]["wall_s"], 1) if r.get("tokens") else None for r in results
    ]
    if "local_first_run" in results[0]:  # engine ray: the local engine's first run beside it
        loc = [r["local_first_run"] for r in results]
        out["local_first_run_s"] = [round(x["wall_s"], 2) for x in loc]
        out["local_first_run_tokens_per_s"] = [round(x["tokens"] / x["wall_s"], 1) if x.get("tokens") else None for x in loc]
        out["ray_vs_local_first_run"] = [round(x["wall_s"] / r["phases"]["first_run"]["wall_s"], 3) for x, r in zip(loc, results)]
        # What going through Ray adds per shard: the first run's extra wall seconds over the local engine's, per shard.
        out["ray_extra_per_shard_s"] = [
            round((r["phases"]["first_run"]["wall_s"] - x["wall_s"]) / r["shards"], 4) for x, r in zip(loc, results)
        ]
        out["prior_loads"] = [r.get("prior_loads") for r in results]
    if "ui" in results[-1]:
        out["ui_at_shards"] = results[-1]["shards"]
        out["ui"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in results[-1]["ui"].items()}
    if len(results) >= 2:
        a, b = results[-2], results[-1]
        per = lambda r, p: r["phases"][p]["wall_s"] / r["shards"]  # noqa: E731
        out["per_shard_ratio"] = {p: round(per(b, p) / per(a, p), 2) for p in PHASES}
        out["rss_ratio"] = round(out["peak_rss_mb"][-1] / out["peak_rss_mb"][-2], 3)
    return out


def table(results: list[dict]) -> str:
    head = f"{'N':>6} {'phase':<12} {'wall s':>9} {'engine s':>9} {'overhead/shard':>15} {'peak RSS MB':>12}"
    lines = [head, "-" * len(head)]
    for r in results:
        for p in PHASES:
            x = r["phases"][p]
            lines.append(
                f"{r['shards']:>6} {p:<12} {x['wall_s']:9.1f} {x['engine_s']:9.1f} "
                f"{x['overhead_per_shard_s'] * 1000:12.1f} ms {x['peak_rss_mb']:12.0f}"
            )
        lines.append(
            f"{r['shards']:>6} {'instance':<12} {r['dagster_home_mb']:9.1f} MB, {r['runs']} runs "
            f"({r['backfill_instance_mb']:.2f} MB added by the backfill); lake {r['lake_mb']:.1f} MB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[10, 100, 1000], help="corpus sizes N (default 10 100 1000)")
    parser.add_argument("--out", default=None, help="folder for scale.json and scale.png (default: the work folder)")
    parser.add_argument("--work", default=None, help="where corpora and data directories go (default: a temporary folder)")
    parser.add_argument("--no-ui", action="store_true", help="skip the GraphQL timings at the largest N")
    parser.add_argument("--layers", type=int, default=2, help="layers of the small prior (default 2)")
    parser.add_argument(
        "--instance",
        nargs="+",
        choices=("sqlite", "postgres"),
        default=["sqlite"],
        help="where the Dagster instance lives: local SQLite (default), a PostgreSQL server started here, or both side by side",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="ray: the prior's steps on a local one-node Ray cluster started for the benchmark (CPU actors, as many "
        "threads as the local engine), with the local engine's first run beside it for comparison",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child), args.report)

    work = Path(args.work or tempfile.mkdtemp(prefix="tledit-scale-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).absolute() if args.out else work
    out.mkdir(parents=True, exist_ok=True)
    models = Path(os.environ.get("TLEDIT_MODEL_CACHE") or work / "models")
    prior = build_small_prior(work / f"small-prior-{args.layers}l", models, layers=args.layers)
    env = dict(os.environ) | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TLEDIT_MODEL_CACHE": str(models)}
    env.pop("DAGSTER_HOME", None)
    docs = sample_documents()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(
        f"make scale: N = {args.shards}, {DOCS_PER_SHARD} documents per shard, small prior ({args.layers} layers) "
        f"on {os.cpu_count()} CPU(s) ({cpu}); work folder {work}",
        flush=True,
    )
    ray = None
    if args.engine == "ray":  # one head node on loopback, as many CPUs as this machine, no GPU
        from benchmarks.cluster import LocalCluster

        t = time.perf_counter()
        ray = LocalCluster(env=env, cpus=os.cpu_count() or 1, gpus=0)
        ray.start_head()
        print(f"make scale: Ray head {ray.address} up in {time.perf_counter() - t:.1f}s", flush=True)
    summaries: dict[str, dict[str, Any]] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped benchmark still stops its servers
    try:
        for name in args.instance:
            with server_for(name) as server:
                instance = Instance(name, server)
                results = [
                    measure(
                        n,
                        work,
                        prior,
                        docs,
                        env,
                        ui=not args.no_ui and n == max(args.shards),
                        instance=instance,
                        ray_address=ray and ray.address,
                    )
                    for n in sorted(args.shards)
                ]
            print(f"\n{name}")
            print(table(results))
            summaries[name] = summary_json(results) | {"instance": name}
            if "ui" in summaries[name]:
                print(f"\nGraphQL at N={summaries[name]['ui_at_shards']} ({summaries[name]['ui']})")
            png = chart(results, out / ("scale.png" if len(args.instance) == 1 else f"scale-{name}.png"))
            if png:
                print(f"chart: {png}")
    finally:
        if ray is not None:
            ray.stop()
    (data,) = summaries.values() if len(summaries) == 1 else ({"instances": summaries},)
    data["cpu"] = f"{os.cpu_count()} x {cpu}"
    data["engine"] = args.engine
    (out / "scale.json").write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data))
    return 0


@contextlib.contextmanager
def server_for(name: str):
    """None for SQLite; for PostgreSQL a throwaway server (the tests' one), stopped and removed afterwards."""
    if name != "postgres":
        yield None
        return
    sys.path.insert(0, str(REPO))
    from tests.postgres import throwaway_server

    with throwaway_server(password=os.urandom(12).hex()) as server:
        yield server


if __name__ == "__main__":
    sys.exit(main())

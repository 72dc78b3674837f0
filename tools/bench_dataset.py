"""Benchmark: the training-data builder at scale, the in-memory path beside the tokenized cache.

For each size (default 2k, 10k, 50k synthetic pairs of 8-12 sentences a side,
``tools/bench_pairs.py``'s generator, with SmolLM2's 49k BPE tokenizer), each
builder runs in a fresh process (``--child``) while this process samples the
memory of that process and all its workers:

- ``in-memory``: the builder before the cache (``read_pairs`` + ``encode_training_items``
  into Python lists, one process); what rank 0 sent every other rank is the
  pickle of those lists;
- ``cache, num_proc=N`` cold: ``prepare_tokenized`` (``datasets.map`` into
  Arrow) + opening the rows to train on, in an empty cache folder;
- ``cache, rerun``: the same call again, which opens the files without tokenizing.

Columns: wall time of the build call; CPU seconds of the build in the whole
process tree (the child and the workers it reaped); pairs per CPU-second;
peak memory of the process tree (sum of PSS, so pages forked workers share are
counted once; sampled every 50 ms), the anonymous part of it (heap: without
the memory-mapped files the kernel can drop), and the peak above the child's
own baseline after a warm-up on 20 pairs; the cache on disk; the bytes another rank receives. A projection to
1M pairs follows (linear in pairs for time, bytes and the in-memory path's
memory; the cache's memory from its 2k→50k growth).

    python tools/bench_dataset.py [--sizes 2000,10000,50000] [--num-proc 1,2] [--tokenizer DIR] [--json out.json]

Tokenizers keep their default threading (the in-memory path and ``num_proc=1``
may use the Rust tokenizer's threads; ``datasets`` turns them off in forked
workers); CPU seconds count every thread. The cache key includes the masking
code, so run it on a tree nobody edits meanwhile (a rerun that tokenizes again
is reported as an error), e.g. a snapshot made with ``git archive HEAD | tar -x -C SNAPSHOT_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- memory of a process tree


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                out += [int(c) for c in handle.read().split()]
    except OSError:
        pass
    return out


def _pss_kb(pid: int) -> tuple[int, int]:
    """``(Pss, Pss_Anon)`` of one process in kB (anonymous: heap and stacks, not mapped files)."""
    pss = anon = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Pss_Anon:"):
                    anon = int(line.split()[1])
    except OSError:
        pass
    return pss, anon


def tree_pss_mb(pid: int, anon_only: bool = False) -> float:
    """PSS of ``pid`` and all its descendants, in MB (``anon_only``: without file-backed pages, such as
    the memory-mapped cache, which the kernel can drop and reread)."""
    todo, total = [pid], 0
    while todo:
        p = todo.pop()
        total += _pss_kb(p)[1 if anon_only else 0]
        todo += _children(p)
    return total / 1024


class PeakSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.peak_anon, self.stop = pid, every, 0.0, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_pss_mb(self.pid))
            self.peak_anon = max(self.peak_anon, tree_pss_mb(self.pid, anon_only=True))
            time.sleep(self.every)


def run_child(args: dict) -> dict:
    """Run one build in a fresh process; its JSON result plus tree CPU time and peak tree memory."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(args)], stdout=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1",
                                 "HF_HUB_OFFLINE": "1"})
    sampler = PeakSampler(proc.pid)
    sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    sampler.stop.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}) for {args}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["process_cpu_s"] = usage.ru_utime + usage.ru_stime  # with interpreter start and imports
    result["peak_mb"] = sampler.peak
    result["above_baseline_mb"] = sampler.peak - result["baseline_mb"]
    result["peak_anon_mb"] = sampler.peak_anon
    return result


# ---------------------------------------------------------------- one build (in the child)


def child(args: dict) -> None:
    import pickle

    from transformers import AutoTokenizer

    from maskdpo.xtuner.dataset import (BuildReport, encode_training_items, open_pair_dataset, prepare_tokenized,
                                        read_pairs)

    tok = AutoTokenizer.from_pretrained(args["tokenizer"])
    # Warm up on a few pairs (lazy imports, the compiled template, first allocations), so the baseline
    # holds everything but what depends on the number of pairs.
    with tempfile.TemporaryDirectory() as warm:
        few = Path(warm) / "pairs.jsonl"
        with open(args["pairs"], encoding="utf-8") as handle, few.open("w", encoding="utf-8") as out:
            out.writelines(line for _, line in zip(range(20), handle))
        encode_training_items(read_pairs(str(few)), tok, args["max_length"])
        pickle.dumps(open_pair_dataset(prepare_tokenized(str(few), tok, args["max_length"], cache_dir=warm), "both"))
    baseline = tree_pss_mb(os.getpid())
    t0, c0, reaped0 = time.perf_counter(), time.process_time(), _reaped_cpu()
    if args["builder"] == "in-memory":
        report = BuildReport()
        items = encode_training_items(read_pairs(args["pairs"], report=report), tok, args["max_length"],
                                      report=report)
        sent = len(pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))  # the old builder broadcast the lists
        kept, cache_mb, tokenized = len(items), 0.0, True
    else:
        before = {p.name for p in Path(args["cache_dir"]).glob("*")} if Path(args["cache_dir"]).is_dir() else set()
        store = prepare_tokenized(args["pairs"], tok, args["max_length"], "both", cache_dir=args["cache_dir"],
                                  num_proc=args["num_proc"])
        dataset = open_pair_dataset(store, "both", args["pairs"])
        sent = len(pickle.dumps(dataset, protocol=pickle.HIGHEST_PROTOCOL))
        kept, cache_mb = len(dataset), store.size_bytes() / 2**20
        tokenized = store.folder.name not in before
        dataset[len(dataset) - 1]  # one item read back from the memory-mapped files
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _reaped_cpu() - reaped0  # this process and the workers it reaped
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "kept": kept, "sent_bytes": sent, "cache_mb": cache_mb,
                      "baseline_mb": baseline, "tokenized": tokenized}))


def _reaped_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- the driver


def write_pairs(path: Path, count: int) -> None:
    """``bench_pairs``' synthetic pairs, made usable for training: each side has a sentence the loss
    keeps, and the chosen side is the one with more correct sentences (maskdpo.validate's rules)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from bench_pairs import synthetic_pairs

    with path.open("w", encoding="utf-8") as handle:
        for pair in synthetic_pairs(count):
            pair.chosen_item.type[0], pair.rejected_item.type[0] = "no_hallucination", "hallucination"
            correct = lambda item: item.type.count("no_hallucination") / len(item.type)  # noqa: E731
            if correct(pair.chosen_item) < correct(pair.rejected_item):
                pair.chosen, pair.rejected = pair.rejected, pair.chosen
                pair.chosen_item, pair.rejected_item = pair.rejected_item, pair.chosen_item
                pair.chosen_item.type[0], pair.rejected_item.type[0] = "no_hallucination", "hallucination"
            handle.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")


def fmt_row(name: str, n: int, r: dict) -> str:
    return (f"| {n:,} | {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {n / r['cpu_s']:.0f} | {r['peak_mb']:.0f} | "
            f"{r['peak_anon_mb']:.0f} | {r['above_baseline_mb']:+.0f} | {r['cache_mb']:.0f} | "
            f"{r['sent_bytes'] / 1e6:.4f} |")


def project(results: dict, sizes: list[int], target: int = 1_000_000) -> list[str]:
    """1M-pair numbers: time, CPU, cache size and (for the in-memory path) bytes sent scale linearly from
    the largest size; peak memory grows at its measured slope from the smallest to the largest size."""
    small, big = min(sizes), max(sizes)
    scale = target / big

    def peak(name: str, key: str) -> float:
        r, r0 = results[big][name], results[small][name]
        slope = max(0.0, (r[key] - r0[key]) / (big - small)) if big > small else 0.0  # MB per pair
        return (r[key] + slope * (target - big)) / 1024

    lines = ["| builder | build wall | CPU time | peak memory (tree PSS) | of it anonymous | cache on disk | "
             "sent to each rank |", "|---|---|---|---|---|---|---|"]
    for name, r in results[big].items():
        lines.append(f"| {name} | {r['wall_s'] * scale / 60:.1f} min | {r['cpu_s'] * scale / 60:.1f} CPU-min | "
                     f"{peak(name, 'peak_mb'):.1f} GB | {peak(name, 'peak_anon_mb'):.1f} GB | "
                     f"{r['cache_mb'] * scale / 1024:.1f} GB | "
                     f"{r['sent_bytes'] * (scale if name == 'in-memory' else 1) / 1e6:.4g} MB |")
    return lines


def report(results: dict) -> None:
    """The tables and the 1M projection of a run (also from ``--json`` output, with ``--report``)."""
    sizes = sorted(results)
    header = ["| pairs | builder | build wall s | CPU s (tree) | pairs / CPU-s | peak memory MB (tree PSS) | "
              "of it anonymous MB | above baseline MB | cache MB | sent to each rank MB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    click.echo("\n".join(header + [fmt_row(name, n, r) for n in sizes for name, r in results[n].items()]))
    click.echo("")
    click.echo(f"projected to 1,000,000 pairs (from {max(sizes):,}; memory growth from {min(sizes):,}):")
    click.echo("\n".join(project(results, sizes)))


@click.command()
@click.option("--sizes", default="2000,10000,50000", show_default=True, help="Pair counts, comma-separated.")
@click.option("--num-proc", "num_procs", default="1,2", show_default=True, help="num_proc values for the cold cache build.")
@click.option("--builders", default="in-memory,cache", show_default=True,
              help="Which builders to run (in-memory, cache), comma-separated.")
@click.option("--max-length", type=int, default=1024, show_default=True)
@click.option("--tokenizer", default=None, help="Tokenizer folder (default: SmolLM2-135M-Instruct's, from the tests' "
                                                "model cache).")
@click.option("--workdir", type=click.Path(path_type=Path), default=None, help="Where pair files and caches go "
                                                                                "(default: a temporary folder).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Also write the raw results.")
@click.option("--report", "report_json", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Print the tables and the projection of an earlier --json output instead of measuring.")
@click.option("--child", "child_args", default=None, hidden=True)
def bench(sizes, num_procs, builders, max_length, tokenizer, workdir, json_out, report_json, child_args) -> None:
    """Time and size the in-memory builder and the tokenized cache at several pair counts."""
    if child_args:
        return child(json.loads(child_args))
    if report_json:
        return report({int(k): v for k, v in json.loads(report_json.read_text()).items()})
    if tokenizer is None:
        sys.path.insert(0, str(ROOT))
        from tests.models import smollm2_tokenizer_dir

        tokenizer = str(smollm2_tokenizer_dir())
    sizes = [int(s) for s in sizes.split(",")]
    procs = [int(p) for p in num_procs.split(",")]
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench-dataset-")) if own else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    click.echo(f"tokenizer: {tokenizer}; max_length {max_length}; {os.cpu_count()} CPUs; workdir {workdir}")
    header = ["| pairs | builder | build wall s | CPU s (tree) | pairs / CPU-s | peak memory MB (tree PSS) | "
              "of it anonymous MB | above baseline MB | cache MB | sent to each rank MB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    results: dict = {}
    try:
        for n in sizes:
            pairs = workdir / f"pairs-{n}.jsonl"
            if not pairs.exists():
                write_pairs(pairs, n)
            base = {"tokenizer": tokenizer, "pairs": str(pairs), "max_length": max_length}
            results[n] = {"in-memory": run_child({**base, "builder": "in-memory"})} if "in-memory" in builders else {}
            for p in procs if "cache" in builders else []:
                cache = workdir / f"cache-{n}-np{p}"
                shutil.rmtree(cache, ignore_errors=True)
                args = {**base, "builder": "cache", "cache_dir": str(cache), "num_proc": p}
                results[n][f"cache, num_proc={p}"] = run_child(args)
                if p == procs[-1]:
                    results[n]["cache, rerun"] = rerun = run_child(args)
                    if rerun["tokenized"]:  # the key changed between the runs (code edited meanwhile?)
                        raise RuntimeError(f"the rerun at {n} pairs tokenized again: its timing would be wrong")
                if p != procs[-1]:
                    shutil.rmtree(cache, ignore_errors=True)
            for line in header + [fmt_row(name, n, r) for name, r in results[n].items()]:
                click.echo(line)
            sys.stdout.flush()
        click.echo("")
        report(results)
        if json_out:
            json_out.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    bench()

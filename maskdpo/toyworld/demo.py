"""``maskdpo demo``: the whole method on the CPU toy world, base vs DPO vs Mask-DPO.

Per seed, in ``OUT/seed-S/``, each step skipped when its output is complete
(a killed run restarts where it stopped)::

    world.json, questions-{train,test}.jsonl     generate_world
    base/                                        train_base_policy (the "instruct model")
    samples.jsonl                                run_sampling: n per training question, hf backend, top-k 40, T 0.8
    annotations.jsonl                            run_annotation: toyworld-oracle
    pairs.jsonl                                  run_pairs: best vs worst per question
    train/{maskdpo,dpo}/                         python -m xtuner.tools.train (mask both / none), pth_to_hf → hf/
    eval/{model}-{split}-*.jsonl                 fresh samples (n per question) of each model, annotated
    scores.json

Two worlds (``--world``): ``rich`` (the default, :mod:`maskdpo.toyworld.rich`:
about ten attributes per person, answers stating varied subsets, regions
shared by families, a third split of held-out families) and ``simple``
(:mod:`maskdpo.toyworld.world`: four attributes, the first world).

Then ``OUT/report.{md,json,png}`` (all seeds: mean ± spread, within-seed
differences) and the Table-1 files ``OUT/table1-{train,test}.{md,json,png}``,
written by :mod:`maskdpo.toyworld.report`.

The headline metric is the ANAH score of sampled answers (``eval_samples``
per question, the paper's decoding) on the training questions (fresh samples)
and on the held-out people; facts per response and fact precision (ok / facts)
sit beside it so a method cannot win by saying less.

``--study topics`` and ``--study mask`` reuse the shared steps
(:func:`prepare_seed`, :func:`step_train`, :func:`evaluate_model`); see
:mod:`maskdpo.toyworld.study`. :func:`run_demo` runs whichever the settings ask for.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ..settings import knob, write_settings
from .policy import PolicySettings
from .report import SPLIT_TITLES, write_reports
from .rich import RichSettings
from .world import WorldSettings

SPLITS = ("train", "test")  # every world; the rich world adds "test_family"
# Preference-training runs: the XTuner config and the mask the data carries (-100 labels).
CONFIGS = {"maskdpo": "maskdpo_tiny_cpu.py", "dpo": "dpo_tiny_cpu.py", "mask-chosen": "maskdpo_tiny_cpu.py",
           "mask-rejected": "maskdpo_tiny_cpu.py"}
MASKS = {"maskdpo": "both", "dpo": "none", "mask-chosen": "chosen", "mask-rejected": "rejected"}
# Measured minutes per seed at --threads 1 on a 2-core machine shared with other jobs (docs/toyworld.md,
# "Sizes and time"): (world, quick) -> minutes. A quiet machine is faster.
MINUTES_PER_SEED = {("rich", True): 3.5, ("rich", False): 8.0, ("simple", True): 2.0, ("simple", False): 2.5}


@dataclass
class DemoSettings:
    out: Path = knob(None, "Output folder (created; a rerun resumes and skips finished steps).")
    quick: bool = knob(False, "Smaller world and shorter training (about 3 minutes on 2 cores; used in CI).")
    seeds: int = knob(1, "Number of seeds (0, 1, ...); the report gives mean ± spread over them.")
    first_seed: int = knob(0, "The first seed.")
    threads: Optional[int] = knob(None, "torch CPU threads (also for the XTuner training processes). Default: the "
                                        "cores free now (cpu count minus load average), at least 1.")
    world: Literal["rich", "simple"] = knob(
        "rich", "The world: 'rich' (about ten attributes, answers stating varied subsets, regions shared by "
                "families, held-out families) or 'simple' (four attributes, every answer states them all).")
    samples: Optional[int] = knob(None, "Samples per training question for the pairs (default 8).")
    eval_samples: Optional[int] = knob(None, "Sampled answers per question when evaluating (default 8).")
    dpo_epochs: Optional[int] = knob(None, "Preference-training epochs over the pairs (default 4).")
    dpo_lr: Optional[float] = knob(None, "Preference-training learning rate (default 2e-4).")
    beta: float = knob(0.1, "DPO beta (paper: 0.1).")
    study: Optional[Literal["topics", "mask"]] = knob(
        None, "Run a study instead of the base/DPO/Mask-DPO comparison. 'topics': Mask-DPO on equal-size pair "
              "subsets drawn from 1/3, 2/3 and all of the families (more topics vs more questions per topic, "
              "paper Table 4); writes study-topics.{md,json,png}. 'mask': the same pairs trained with the mask "
              "on both sides, the chosen side only, the rejected side only and none; writes study-mask.{md,json,png}.")


@dataclass(frozen=True)
class Plan:
    """Every size the demo uses, resolved from the settings (quick or full)."""

    world: WorldSettings | RichSettings
    policy: PolicySettings
    samples: int
    eval_samples: int
    dpo_epochs: int
    dpo_lr: float
    dpo_batch_size: int
    max_new_tokens: int


def make_plan(settings: DemoSettings, seed: int) -> Plan:
    # Two phrasings per person: twice the pairs for the same base-policy training (8 answers per question).
    # Both worlds have 96 (quick) / 200 (default) training questions.
    threads = settings.threads or 1
    if settings.world == "simple":
        if settings.quick:
            world = WorldSettings(seed=seed, families=12, people_per_family=6, test_per_family=2,
                                  questions_per_person=2)
        else:
            world = WorldSettings(seed=seed, families=20, people_per_family=7, test_per_family=2,
                                  questions_per_person=2)
        policy = PolicySettings(seed=seed, threads=threads, answers_per_question=8)
        max_new_tokens = 96
    else:
        if settings.quick:  # 12 training + 3 held-out families
            world = RichSettings(seed=seed, regions=3, families_per_region=5, people_per_family=6)
        else:  # 20 training + 4 held-out families
            world = RichSettings(seed=seed, regions=4, families_per_region=6, people_per_family=7)
        policy = PolicySettings(seed=seed, threads=threads, answers_per_question=8)
        max_new_tokens = 160  # answers run to ~10 sentences
    # lr 5e-4 degraded the policy (fact precision fell, garbled sentences rose); 2e-4 did not.
    return Plan(world=world, policy=policy, samples=settings.samples or 8, eval_samples=settings.eval_samples or 8,
                dpo_epochs=settings.dpo_epochs or 4, dpo_lr=settings.dpo_lr or 2e-4, dpo_batch_size=4,
                max_new_tokens=max_new_tokens)


def default_threads(cpu_count: int | None, load_average: float | None) -> int:
    """torch threads for a machine with ``cpu_count`` cores and this 1-minute load average.

    The cores not busy now, rounded down, at least 1 and at most 4: OpenMP threads on a busy core wait on
    each other (two threads on two busy cores ran 5–10× slower than one). Unknown counts give 1.
    """
    if not cpu_count or load_average is None:
        return 1
    return max(1, min(4, int(cpu_count - load_average)))


def resolve_threads(settings: DemoSettings) -> DemoSettings:
    """``settings`` with ``threads`` chosen from the free cores when not given."""
    if settings.threads is not None:
        return settings
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        load = None
    return dataclasses.replace(settings, threads=default_threads(os.cpu_count(), load))


def expected_minutes(settings: DemoSettings, runs_per_seed: int = 1) -> float:
    """Rough wall time of the whole command: measured minutes per seed (on a busy machine) × seeds."""
    return MINUTES_PER_SEED[(settings.world, settings.quick)] * settings.seeds * runs_per_seed


def validate(settings: DemoSettings) -> None:
    if settings.out in (None, ""):
        raise ValueError("--out is required")
    if settings.seeds < 1 or (settings.threads is not None and settings.threads < 1):
        raise ValueError("--seeds and --threads must be >= 1")
    for name in ("samples", "eval_samples"):
        value = getattr(settings, name)
        if value is not None and value < 2:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 2 (a pair needs two samples), got {value}")


def config_dir() -> Path:
    """The repository's ``xtuner_configs/`` (the package is installed editable from the clone)."""
    folder = Path(__file__).resolve().parents[2] / "xtuner_configs"
    if not (folder / CONFIGS["maskdpo"]).exists():
        raise FileNotFoundError(f"{folder}: the XTuner configs are missing; run the demo from a clone of the "
                                "repository installed with `pip install -e .`")
    return folder


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


# ---------------------------------------------------------------- steps


def step_world(plan: Plan, folder: Path) -> Path:
    from ..jsonl import write_jsonl
    from .rich import generate_rich_world
    from .world import generate_world, load_world

    path = folder / "world.json"
    if not path.exists():
        world = generate_rich_world(plan.world) if isinstance(plan.world, RichSettings) else generate_world(plan.world)
        for split in world.splits:
            write_jsonl(folder / f"questions-{split}.jsonl", [q.to_dict() for q in world.questions_for(split)])
        world.save(path)  # last: its presence marks the step done
    world = load_world(path)
    expected = "rich" if isinstance(plan.world, RichSettings) else "simple"
    if world.kind != expected:
        raise ValueError(f"{path}: a {world.kind} world, but this run asks for --world {expected}; "
                         "use another --out")
    counts = " / ".join(f"{len(world.questions_for(s))} {SPLIT_TITLES[s]}" for s in world.splits)
    say(f"{world.kind} world: {len(world.families)} families, {len(world.people)} people; questions: {counts}")
    return path


def step_base(plan: Plan, folder: Path, world_path: Path) -> Path:
    from .policy import train_base_policy
    from .world import load_world

    out = folder / "base"
    if not (out / "train_log.json").exists():
        say("training the base policy (tiny Llama, plain torch loop)")
        train_base_policy(load_world(world_path), out, plan.policy)
    return out


def sample_and_annotate(model: Path, questions: Path, world_path: Path, folder: Path, stem: str, n: int, seed: int,
                        plan: Plan) -> Path:
    """Sample ``n`` answers per question with the paper's decoding and label them with the oracle.

    Writes ``folder/<stem>samples.jsonl`` and ``folder/<stem>annotations.jsonl`` (both resumable).
    """
    from ..annotate.run import AnnotateSettings, run_annotation
    from ..sample import SampleSettings, run_sampling

    samples = folder / f"{stem}samples.jsonl"
    annotations = folder / f"{stem}annotations.jsonl"
    run_sampling(SampleSettings(questions=questions, out=samples, model=str(model), backend="hf", n=n,
                                max_new_tokens=plan.max_new_tokens, seed=seed, batch_size=16, device="cpu"))
    run_annotation(AnnotateSettings(samples=samples, questions=questions, out=annotations,
                                    annotator="toyworld-oracle",
                                    annotator_options=json.dumps({"world": str(world_path)})))
    return annotations


def step_pairs(folder: Path, annotations: Path) -> tuple[Path, dict]:
    """The pairs stage with its default rule: ``pairs.jsonl`` (and its settings file), then ``pairs-stats.json``."""
    from ..jsonl import atomic_file
    from ..pairs import PairsRunSettings, run_pairs

    path, stats_path = folder / "pairs.jsonl", folder / "pairs-stats.json"
    if not stats_path.exists():  # written last: its presence marks the step done
        summary = run_pairs(PairsRunSettings(annotations=annotations, out=path))
        if not summary.written:
            raise RuntimeError(f"{annotations}: no usable pairs (every question's samples scored the same)")
        with atomic_file(stats_path) as handle:
            handle.write(json.dumps(summary.stats.to_dict(), indent=1) + "\n")
    stats = json.loads(stats_path.read_text())
    say(f"pairs: {stats['kept']} of {stats['questions']} training questions")
    return path, stats


_ITER = re.compile(r"Iter\(train\)\s*\[\s*(\d+)/\s*(\d+)\]")


def run_logged(cmd: list[str], log: Path, env: dict, desc: str) -> None:
    """Run ``cmd``, its output to ``log``, with a progress bar fed by mmengine's ``Iter(train) [i/N]`` lines."""
    from tqdm.auto import tqdm

    with log.open("w") as handle, tqdm(desc=desc, unit="iter", total=None, dynamic_ncols=True) as bar:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            handle.write(line)
            m = _ITER.search(line)
            if m:
                bar.total = int(m.group(2))
                bar.update(int(m.group(1)) - bar.n)
        code = proc.wait()
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed with exit code {code}; log: {log}\n{tail}")


def step_train(plan: Plan, folder: Path, kind: str, base: Path, pairs: Path, seed: int, settings: DemoSettings,
               cfg_options: tuple[str, ...] = ()) -> Path:
    """Preference-train ``kind`` (a key of :data:`MASKS`) through the XTuner plugin, then convert to a HF model.

    ``cfg_options``: more ``key=value`` overrides of the XTuner config (tests).
    """
    work = folder / "train" / kind
    hf = work / "hf"
    if (hf / ".complete").exists():
        return hf
    config = config_dir() / CONFIGS[kind]
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MASKDPO_MODEL": str(base), "MASKDPO_PAIRS": str(pairs),
           "MASKDPO_EPOCHS": str(plan.dpo_epochs), "MASKDPO_LR": str(plan.dpo_lr),
           "MASKDPO_BATCH_SIZE": str(plan.dpo_batch_size), "MASKDPO_SAVE_STEPS": "1000000",
           "OMP_NUM_THREADS": str(settings.threads), "TOKENIZERS_PARALLELISM": "false"}
    options = ["--cfg-options", f"randomness.seed={seed}", f"model.beta={settings.beta}",
               f"train_dataloader.dataset.mask={MASKS[kind]}", *cfg_options]
    for old in work.glob("iter_*.pth"):  # a killed run's partial checkpoints: train again from the base
        old.unlink()
    run_logged([sys.executable, "-m", "xtuner.tools.train", str(config), "--work-dir", str(work), *options],
               work / "train.log", env, f"xtuner {kind}")
    checkpoints = sorted(work.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    if not checkpoints:
        raise RuntimeError(f"{work}: XTuner finished without writing iter_N.pth (see {work / 'train.log'})")
    run_logged([sys.executable, "-m", "xtuner.tools.model_converters.pth_to_hf", str(config), str(checkpoints[-1]),
                str(hf), "--fp32", "--cfg-options", f"model.beta={settings.beta}"],
               work / "convert.log", env, f"convert {kind}")
    for ckpt in checkpoints:  # the HF copy is what the demo needs; a .pth holds optimizer state too
        ckpt.unlink()
    (hf / ".complete").touch()
    return hf


# ---------------------------------------------------------------- scoring


def response_metrics(annotations: list) -> dict:
    """ANAH score (pooled, nofact correct) plus fact precision and facts per response.

    fact precision = ok / (ok + contradictory + unverifiable); facts = sentences that are not nofact.
    """
    from ..metrics.anah import anah_score

    score = anah_score(annotations)
    counts = score.label_counts
    facts = score.sentences - counts.get("nofact", 0)
    return {"anah": score.exact_score, "correct": score.correct, "incorrect": score.incorrect,
            "sentences": score.sentences, "responses": score.responses,
            "fact_precision": 100.0 * counts.get("ok", 0) / facts if facts else float("nan"),
            "facts_per_response": facts / score.responses, "labels": counts}


@dataclass(frozen=True)
class Prepared:
    """One seed's shared steps, done: the world, the base policy and the full pair set."""

    plan: Plan
    folder: Path  # OUT/seed-S
    world: Path
    base: Path
    pairs: Path
    pair_stats: dict


def prepare_seed(settings: DemoSettings, seed: int) -> Prepared:
    """World, base policy, samples, oracle labels and pairs of one seed (each step resumable)."""
    import torch

    torch.set_num_threads(settings.threads or 1)
    plan = make_plan(settings, seed)
    folder = Path(settings.out) / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    say(f"seed {seed}: {folder}")
    world_path = step_world(plan, folder)
    base = step_base(plan, folder, world_path)
    annotations = sample_and_annotate(base, folder / "questions-train.jsonl", world_path, folder, "",
                                      plan.samples, seed, plan)
    pairs, pair_stats = step_pairs(folder, annotations)
    return Prepared(plan, folder, world_path, base, pairs, pair_stats)


def evaluate_model(prep: Prepared, name: str, model: Path, seed: int, eval_dir: Path) -> dict:
    """``{split: response_metrics + annotations path}`` of fresh samples of ``model`` on every split of the world."""
    from ..jsonl import load_jsonl
    from ..records import Annotation
    from .world import load_world

    eval_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for split in load_world(prep.world).splits:
        # A seed apart from the pair-sampling seed: the training questions get fresh samples.
        path = sample_and_annotate(model, prep.folder / f"questions-{split}.jsonl", prep.world,
                                   eval_dir, f"{name}-{split}-", prep.plan.eval_samples, 10_000 + seed, prep.plan)
        records, _ = load_jsonl(path, Annotation.from_dict)
        result[split] = response_metrics(records)
        result[split]["annotations"] = str(path)
    return result


def run_seed(settings: DemoSettings, seed: int) -> dict:
    prep = prepare_seed(settings, seed)
    models = {"base": prep.base}
    for kind in ("dpo", "maskdpo"):
        models[kind] = step_train(prep.plan, prep.folder, kind, prep.base, prep.pairs, seed, settings)
    scores: dict = {"seed": seed, "pairs": prep.pair_stats, "models": {}}
    for name, model in models.items():
        scores["models"][name] = evaluate_model(prep, name, model, seed, prep.folder / "eval")
    (prep.folder / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    write_settings(prep.folder / "demo-settings.json", settings, plan=dataclasses.asdict(prep.plan))
    return scores


def announce(settings: DemoSettings, runs_per_seed: float = 1.0) -> None:
    """Say up front how long the command should take and with how many threads."""
    minutes = expected_minutes(settings) * runs_per_seed
    say(f"{settings.world} world{', quick' if settings.quick else ''}, {settings.seeds} seed(s), "
        f"{settings.threads} torch thread(s): expect about {minutes:.0f} min (measured on a 2-core machine shared "
        "with other jobs; less on a quiet one; finished steps of an earlier run are skipped)")


def run_demo(settings: DemoSettings) -> dict[str, Path]:
    """``maskdpo demo``: the comparison, or the study ``settings.study`` names; returns the report paths."""
    if settings.study == "topics":
        from .study import run_topic_study  # study.py builds on this module: imported when asked for

        return run_topic_study(settings)
    if settings.study == "mask":
        from .study import run_mask_study

        return run_mask_study(settings)
    return run_comparison(settings)


def run_comparison(settings: DemoSettings) -> dict[str, Path]:
    """Base vs DPO vs Mask-DPO: run every seed (each resumable), then write the reports; returns their paths."""
    validate(settings)
    settings = resolve_threads(settings)
    announce(settings)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    write_settings(out / "demo-settings.json", settings)
    per_seed = [run_seed(settings, seed) for seed in range(settings.first_seed, settings.first_seed + settings.seeds)]
    return write_reports(settings, per_seed)

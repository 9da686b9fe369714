"""Projection: wall time of the whole paper-scale study on one GPU, from measured throughputs.

Reads the JSON-lines records that bench_train.py, bench_pretrain.py and bench_evaluate.py append
with ``--json`` (or takes nominal throughputs as arguments) and multiplies them by the study's
workload (protocol 2.0, 4, 5.2):

- pretraining: 4 methods x 100 epochs over 90,618 slices (drop_last batches), at each method's
  measured images/s; plus the per-epoch validation loss of SimCLR, PCL and MIM on the 74
  validation subjects' slices (74/296 of 90,618 per epoch; DINO has none), forward only;
- fine-tuning: 5 initialisations x (subsets of 10, 15, 25, 50 subjects x 3 seeds + the full pool
  of 296 x 1) = 65 runs of 1,000 epochs, each floor(n_slices / 32) iterations with n_slices =
  round(23.1 x subjects) (ED + ES, ~11.5 slices each), at the end-to-end supervised slices/s;
- validation in every fine-tuning run: 74 subjects x 2 phases x 11.5 slices, forward only, every
  --validate-every epochs and after the last;
- evaluation: 65 runs x 280 test volumes at bench_evaluate's seconds per volume;
- when measured (bench_train --checkpoint-dir): the checkpoint written at the end of every epoch
  (weights-last.pt + checkpoint.pt, fsync'd), and the first step of every run (torch.compile,
  cuDNN autotuning).

Assumption, stated in the output: a forward pass costs 1/3 of a train step per slice (the
backward pass is about twice the forward), so validation runs at 3 x the step-alone slices/s.

    python benchmarks/project_study.py --json gpu-out/bench.jsonl
    python benchmarks/project_study.py --assume-throughput 3000      # nominal, no measurement
    python benchmarks/project_study.py --json cpu.jsonl --validate-every 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp import atomic  # noqa: E402
from cmrssp.methods import METHODS  # noqa: E402
from cmrssp.presets import pretrain_preset  # noqa: E402

TARGET_SLICES_PER_S = 3000.0  # supervised end to end, paper configuration, one H200
PRETRAIN_VIEW_FRACTION = 0.8  # each method's views/s vs the supervised slices/s
FORWARD_COST = 1.0 / 3.0  # forward-only slice / train-step slice (assumption)


# ----------------------------------------------------------------------------------------------
# The record file: one JSON object per line, appended by the benchmarks' --json


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (rewritten atomically, so a crash never
    leaves half a line)."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    atomic.write_text(path, text + json.dumps(record) + "\n")


def read_records(paths: list[str]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    sys.exit(f"{path}:{number}: not a JSON record ({error})")
    return records


def pick(records: list[dict[str, Any]], what: str, **prefer) -> dict[str, Any] | None:
    """The last record that matches the most of ``prefer``, earlier keys weighing more; says
    so when the best one misses a preference."""
    if not records:
        return None
    score = lambda record: tuple(record.get(key) == value for key, value in prefer.items())  # noqa: E731
    best = max(score(record) for record in records)
    chosen = [record for record in records if score(record) == best][-1]
    missed = [f"{key}={value!r}" for (key, value), hit in zip(prefer.items(), best) if not hit]
    if missed:
        print(f"note: no {what} record with {', '.join(missed)}; using "
              f"{', '.join(f'{k}={chosen.get(k)!r}' for k in prefer)}")
    return chosen


# ----------------------------------------------------------------------------------------------
# The figures a projection needs


@dataclass
class Throughputs:
    supervised: float  # slices/s, end to end (data + augmentation + step), the study's batch
    step: float  # slices/s, train step alone
    pretrain: dict[str, float]  # images/s per method
    pretrain_batch: dict[str, int]
    full_size_views: dict[str, float]  # 256² view equivalents per image, per method
    evaluate_seconds_per_volume: float
    startup_seconds: float = 0.0  # first fine-tuning step beyond an ordinary one (compile, autotune), per run
    pretrain_startup_seconds: dict[str, float] | None = None
    checkpoint_seconds: float = 0.0  # per epoch
    sources: dict[str, str] | None = None


def paper_views(method: str) -> tuple[int, float]:
    """(views, 256² view equivalents) per image of a method: DINO's local crops are half size."""
    if method == "dino":
        n_local = pretrain_preset("paper", "dino").dino.n_local_crops
        return 2 + n_local, 2 + n_local / 4
    return {"simclr": (2, 2.0), "pcl": (2, 2.0), "mim": (1, 1.0)}[method]


def nominal(supervised: float, view_fraction: float = PRETRAIN_VIEW_FRACTION) -> Throughputs:
    """Nominal figures from one supervised throughput: the step alone as fast as end to end,
    each pretraining method at ``view_fraction`` of ``supervised`` in 256² views/s (0.8: exactly
    at its target floor), evaluation of 280 volumes in exactly one minute, no startup or
    checkpoint cost."""
    views = {m: paper_views(m)[1] for m in METHODS}
    return Throughputs(
        supervised=supervised, step=supervised,
        pretrain={m: view_fraction * supervised / views[m] for m in METHODS},
        pretrain_batch={m: pretrain_preset("paper", m).train.batch_size for m in METHODS},
        full_size_views=views, evaluate_seconds_per_volume=60.0 / 280,
        sources={"supervised": "assumed", "step": "assumed (= end to end)",
                 "pretrain": f"assumed ({view_fraction:.0%} of supervised slices/s in full-size views/s)",
                 "evaluate": "assumed (280 volumes in 60 s)"},
    )


def from_records(records: list[dict[str, Any]], config: str, batch: int) -> Throughputs:
    """The figures of the records: a GPU record before a CPU one, then ``config``, then the
    study's ``batch``; on CUDA the compiled figure (the loop compiles there), on the CPU eager."""
    trains = [r for r in records if r.get("bench") == "train"]
    first = pick(trains, "train", device_type="cuda", config=config, batch=batch)
    if first is None:
        sys.exit("no train record in the JSON files: run bench_train.py --json, or pass --assume-throughput")
    same = [r for r in trains if all(r.get(k) == first.get(k) for k in ("device_type", "config", "batch"))]
    on_gpu = first.get("device_type") == "cuda"
    train = pick(same, "train", compiled=on_gpu)
    if train["config"] != "paper":
        print(f"note: the train record is the {train['config']!r} configuration, not the paper network: "
              "the projection is of the paper-scale workload at that network's speed")
    pretrain, batches, views, startups, sources = {}, {}, {}, {}, {}
    for method in METHODS:
        record = pick([r for r in records if r.get("bench") == "pretrain" and r.get("method") == method],
                      f"{method} pretrain", device_type=train.get("device_type"), preset=train["config"],
                      compiled=on_gpu)
        if record is None:
            continue
        pretrain[method] = float(record["images_per_s"])
        batches[method] = int(record["batch"])
        views[method] = float(record["full_size_views_per_image"])
        startups[method] = first_step_overhead(record.get("first_call_seconds"), record["batch"], pretrain[method])
        sources[f"pretrain {method}"] = (f"{record['device']}, {record['preset']} preset, batch {record['batch']}, "
                                         f"{record['precision']}{', compiled' if record.get('compiled') else ''}")
    evaluate = pick([r for r in records if r.get("bench") == "evaluate"], "evaluate",
                    device_type=train.get("device_type"))
    supervised = float(train["end_to_end_slices_per_s"])
    return Throughputs(
        supervised=supervised, step=float(train["step_slices_per_s"]),
        pretrain=pretrain, pretrain_batch=batches, full_size_views=views,
        evaluate_seconds_per_volume=float(evaluate["seconds_per_volume"]) if evaluate else math.nan,
        startup_seconds=first_step_overhead(train.get("first_call_seconds"), train["batch"], supervised),
        pretrain_startup_seconds=startups,
        checkpoint_seconds=float(train.get("checkpoint_seconds") or 0.0),
        sources={"supervised": f"{train['device']}, {train['config']} config, batch {train['batch']}, "
                               f"{train['precision']}{', compiled' if train.get('compiled') else ''}",
                 **sources,
                 "evaluate": f"{evaluate['device']}, {evaluate['volumes_timed']} volumes timed" if evaluate else "missing"},
    )


def first_step_overhead(first_call: float | None, batch: int, per_second: float) -> float:
    """What a run's first step costs beyond an ordinary one (compile, cuDNN autotuning)."""
    return max(0.0, float(first_call or 0.0) - batch / per_second)


# ----------------------------------------------------------------------------------------------
# The workload


def validated_epochs(epochs: int, every: int) -> int:
    """Epochs the loop validates: every ``every``-th and the last (cmrssp.train.fit)."""
    return epochs // every + (0 if epochs % every == 0 else 1)


def finetune_runs(args) -> list[tuple[str, int, int]]:
    """(label, subjects, runs per initialisation) of the fine-tuning grid."""
    rows = [(f"{n} subjects x {args.seeds} seeds", n, args.seeds) for n in args.subsets]
    return rows + [(f"full pool ({args.full_pool})", args.full_pool, 1)]


def project(t: Throughputs, args) -> list[tuple[str, str, float]]:
    """Rows (phase, work, seconds) of the study on one device."""
    rows: list[tuple[str, str, float]] = []
    valid_pretrain = round(args.pretrain_slices * args.valid_subjects / args.full_pool)
    for method in METHODS:
        if method not in t.pretrain:
            rows.append((f"pretrain {method}", "no figure", math.nan))
            continue
        batch = t.pretrain_batch[method]
        images = args.pretrain_epochs * (args.pretrain_slices // batch) * batch
        rows.append((f"pretrain {method}", f"{images / 1e6:.2f} M images at {t.pretrain[method]:,.4g}/s",
                     images / t.pretrain[method]))
        if method != "dino":
            epochs = validated_epochs(args.pretrain_epochs, args.validate_every)
            seconds = epochs * valid_pretrain * FORWARD_COST / t.pretrain[method]
            rows.append((f"  validation {method}", f"{epochs} x {valid_pretrain:,} images, forward", seconds))
    slices_total, iterations_total, epochs_total = 0, 0, 0
    for label, subjects, runs in finetune_runs(args):
        per_epoch = round(args.slices_per_subject * subjects) // args.batch
        slices = args.inits * runs * args.finetune_epochs * per_epoch * args.batch
        slices_total += slices
        iterations_total += args.inits * runs * args.finetune_epochs * per_epoch
        epochs_total += args.inits * runs * args.finetune_epochs
        rows.append((f"fine-tune {label}", f"{args.inits * runs} runs x {args.finetune_epochs} x {per_epoch} it",
                     slices / t.supervised))
    n_runs = args.inits * sum(runs for _, _, runs in finetune_runs(args))
    valid_slices = args.valid_subjects * 2 * args.slices_per_phase
    epochs = validated_epochs(args.finetune_epochs, args.validate_every)
    rows.append((f"validation (every {args.validate_every})", f"{n_runs} runs x {epochs} x {valid_slices:,.0f} slices",
                 n_runs * epochs * valid_slices * FORWARD_COST / t.step))
    rows.append(("evaluation", f"{n_runs} runs x {args.test_volumes} volumes",
                 n_runs * args.test_volumes * t.evaluate_seconds_per_volume))
    startup = n_runs * t.startup_seconds + sum((t.pretrain_startup_seconds or {}).values())
    if startup >= 1.0:
        rows.append(("run startup (first step)", f"{n_runs + len(t.pretrain)} runs", startup))
    if t.checkpoint_seconds:
        pretrain_epochs = args.pretrain_epochs * len(t.pretrain)
        rows.append(("epoch checkpoints", f"{epochs_total + pretrain_epochs:,} epochs x {t.checkpoint_seconds:.2f} s",
                     (epochs_total + pretrain_epochs) * t.checkpoint_seconds))
    return rows


def print_figures(t: Throughputs) -> None:
    print("Figures:")
    for name, source in (t.sources or {}).items():
        print(f"  {name:<16} {source}")
    print(f"  supervised {t.supervised:,.4g} slices/s end to end ({t.supervised / TARGET_SLICES_PER_S:.0%} of the "
          f"{TARGET_SLICES_PER_S:,.0f} target), step alone {t.step:,.4g} slices/s; forward-only cost taken as "
          f"{FORWARD_COST:.2f} of a train step per slice (assumption)")
    for method, images in t.pretrain.items():
        views = images * t.full_size_views[method]
        print(f"  {method:<6} {images:,.4g} images/s = {views:,.4g} full-size views/s = {views / t.supervised:.0%} of the "
              f"supervised slices/s ({'meets' if views >= PRETRAIN_VIEW_FRACTION * t.supervised else 'below'} "
              f"the {PRETRAIN_VIEW_FRACTION:.0%} target)")


def print_projection(t: Throughputs, args) -> float:
    rows = project(t, args)
    print(f"\nProjected paper-scale study on one device, validation every {args.validate_every} epoch(s):")
    print(f"{'phase':<32} {'work':<44} {'hours':>8}")
    for phase, work, seconds in rows:
        print(f"{phase:<32} {work:<44} {seconds / 3600:>8.2f}")
    total = sum(seconds for _, _, seconds in rows)
    print(f"{'total':<32} {'':<44} {total / 3600:>8.2f}")
    if not math.isfinite(total):
        print("-> incomplete: a figure is missing (no figure / nan above)")
        return total
    verdict = "meets" if total <= args.target_hours * 3600 else "misses"
    print(f"-> {total / 3600:.1f} h: {verdict} the {args.target_hours:g} h target")
    pretraining = sum(s for phase, _, s in rows if phase.startswith("pretrain") or phase.startswith("  validation"))
    rest = total - pretraining
    if total > args.target_hours * 3600 and rest < args.target_hours * 3600 and pretraining > 0:
        room = args.target_hours * 3600 - rest
        print(f"   everything but pretraining takes {rest / 3600:.1f} h; pretraining ({pretraining / 3600:.1f} h) would "
              f"have to be {pretraining / room:.2f}x faster to fit")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", nargs="+", default=[], metavar="PATH", help="record files of the benchmarks")
    parser.add_argument("--config", default="paper", help="which bench_train configuration to project with")
    parser.add_argument("--assume-throughput", type=float, metavar="SLICES_PER_S",
                        help="nominal supervised end-to-end slices/s; the other figures follow (see nominal())")
    parser.add_argument("--assume-view-fraction", type=float, default=PRETRAIN_VIEW_FRACTION,
                        help="with --assume-throughput: each method's 256² views/s as a fraction of the supervised slices/s")
    parser.add_argument("--supervised-slices-per-s", type=float, help="override: end-to-end supervised slices/s")
    parser.add_argument("--step-slices-per-s", type=float, help="override: train step alone, slices/s")
    parser.add_argument("--pretrain-images-per-s", nargs="+", default=[], metavar="METHOD=N",
                        help="override: e.g. simclr=1500 dino=700")
    parser.add_argument("--evaluate-seconds-per-volume", type=float, help="override")
    parser.add_argument("--checkpoint-seconds", type=float, help="override: seconds per epoch checkpoint")
    parser.add_argument("--startup-seconds", type=float, help="override: first-step seconds per fine-tuning run")
    parser.add_argument("--validate-every", type=int, default=1, help="fine-tuning (and pretraining) validation interval")
    study = parser.add_argument_group("the study's workload (protocol 2.0, 4, 5.2)")
    study.add_argument("--pretrain-slices", type=int, default=90_618)
    study.add_argument("--pretrain-epochs", type=int, default=100)
    study.add_argument("--inits", type=int, default=5, help="scratch + 4 pretrained")
    study.add_argument("--subsets", type=int, nargs="+", default=[10, 15, 25, 50])
    study.add_argument("--seeds", type=int, default=3)
    study.add_argument("--full-pool", type=int, default=296)
    study.add_argument("--slices-per-subject", type=float, default=23.1, help="ED + ES slices per subject")
    study.add_argument("--finetune-epochs", type=int, default=1000)
    study.add_argument("--batch", type=int, default=32)
    study.add_argument("--valid-subjects", type=int, default=74)
    study.add_argument("--slices-per-phase", type=float, default=11.5)
    study.add_argument("--test-volumes", type=int, default=280)
    study.add_argument("--target-hours", type=float, default=12.0)
    args = parser.parse_args()
    if args.validate_every < 1:
        parser.error("--validate-every must be at least 1")

    if args.json and args.assume_throughput:
        parser.error("--assume-throughput projects from nominal figures; use the override options with --json")
    if args.json:
        throughputs = from_records(read_records(args.json), args.config, args.batch)
    elif args.assume_throughput or args.supervised_slices_per_s:
        throughputs = nominal(args.assume_throughput or args.supervised_slices_per_s, args.assume_view_fraction)
    else:
        parser.error("give --json record files or --assume-throughput SLICES_PER_S")
    sources = throughputs.sources
    for name, value in (("supervised", args.supervised_slices_per_s), ("step", args.step_slices_per_s),
                        ("evaluate_seconds_per_volume", args.evaluate_seconds_per_volume),
                        ("checkpoint_seconds", args.checkpoint_seconds), ("startup_seconds", args.startup_seconds)):
        if value is not None:
            setattr(throughputs, name, value)
            sources[name.split("_")[0]] = "given"
    for item in args.pretrain_images_per_s:
        method, _, value = item.partition("=")
        if method not in METHODS or not value:
            parser.error(f"--pretrain-images-per-s wants METHOD=N with METHOD in {', '.join(METHODS)}, got {item!r}")
        throughputs.pretrain[method] = float(value)
        throughputs.pretrain_batch.setdefault(method, pretrain_preset("paper", method).train.batch_size)
        throughputs.full_size_views.setdefault(method, paper_views(method)[1])
        sources[f"pretrain {method}"] = "given"
    print_figures(throughputs)
    print_projection(throughputs, args)
    if args.validate_every == 1:  # the study's setting; also show the cheaper one
        print_projection(throughputs, argparse.Namespace(**{**vars(args), "validate_every": 5}))


if __name__ == "__main__":
    main()

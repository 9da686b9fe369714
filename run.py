#!/usr/bin/env python
"""cmrssp command line: one entry point, one subcommand per step of the study.

    python run.py phantom  --out DIR           write a synthetic short-axis cine cohort
    python run.py prepare  [--dataset D --root DIR]... --out CACHE
                                               decode subjects once into a training cache
    python run.py split    --cache CACHE --out split.json
                                               import or draw a train/valid/test split
    python run.py info     --cache CACHE       what a prepared cache holds
    python run.py pretrain --method M          self-supervised pretraining (simclr, pcl, dino, mim)
    python run.py finetune [--n-subjects N] [--init M]
                                               the from-scratch baseline or fine-tuning
    python run.py evaluate [--run RUN]         3D Dice, HD95 and clinical measures in original space
    python run.py predict  --run RUN --input SCAN --out DIR
                                               segment new scans: labels, volume curves, EF, mass
    python run.py study                        all of it: prepare, pretrain, fine-tune, evaluate, results
    python run.py probe                        linear probe of random vs pretrained encoder features

Each subcommand's --help explains its options. Bad input ends with one line naming the file and
the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from cmrssp.errors import InputError

# the names only, so that --help needs no torch import
PRESET_NAMES = ("paper", "cpu", "cpu-real", "tiny")
PROTOCOL_NAMES = ("default", "paper", "acdc")

DATASET_CHOICES = ("mnms", "mnms2", "acdc", "nnunet", "folder")
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def subset_size(text: str) -> int | str:
    return "all" if text == "all" else positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Self-supervised pretraining for CMR cine segmentation (de Mooij et al. 2024), "
        "in plain PyTorch. With no data given, every step uses a built-in synthetic cine cohort.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `python run.py <command> --help` for the options of one command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    phantom = commands.add_parser(
        "phantom",
        help="write a labelled synthetic short-axis cine cohort in a real dataset's layout",
        description="Write a synthetic cine cohort (LV, myocardium, RV with cardiac motion, "
        "surroundings, bSSFP-like contrast, vendor profiles) in the on-disk layout of M&Ms, "
        "M&Ms-2 or ACDC, plus phantom_qa.csv with per-subject volumes and ejection fractions.",
    )
    phantom.add_argument("--out", required=True, type=Path, help="folder to create (must be new or empty)")
    phantom.add_argument("--subjects", type=positive_int, default=20, help="number of subjects (default 20)")
    phantom.add_argument("--seed", type=int, default=0, help="cohort seed; the same seed gives the same files (default 0)")
    phantom.add_argument(
        "--layout", choices=("mnms", "mnms2", "acdc"), default="mnms",
        help="which dataset's file names, CSV/Info.cfg and label convention to write (default mnms)",
    )
    phantom.add_argument(
        "--preset", choices=("default", "tiny"), default="default",
        help="'default': realistic size (~256x216 px, 8-14 slices, 18-35 frames); 'tiny': small test subjects",
    )
    phantom.add_argument(
        "--workers", type=positive_int, default=DEFAULT_WORKERS,
        help=f"processes generating subjects in parallel (default {DEFAULT_WORKERS})",
    )
    phantom.add_argument("--report", action="store_true", help="also print the per-subject QA table")
    phantom.set_defaults(handler=run_phantom)

    prepare = commands.add_parser(
        "prepare",
        help="decode subjects once into a cache that training reads (no NIfTI at training time)",
        description="Read each subject once, resample it in-plane to the target spacing on a fixed "
        "canvas, standardise it with its own statistics, and store images (float16), labels (uint8), "
        "the original-grid labels and all geometry needed to map predictions back to the original "
        "grid. Repeat --dataset/--root pairs (or call again with the same --out) to put several "
        "datasets into one cohort, e.g. M&Ms + M&Ms-2 as in the study. Subjects already in the cache "
        "are skipped. With no --dataset, the built-in synthetic cohort is generated and prepared.",
    )
    prepare.add_argument(
        "--dataset", action="append", choices=DATASET_CHOICES, default=[],
        help="layout of the next --root: mnms, mnms2, acdc, nnunet (raw imagesTr/labelsTr) or folder "
        "(unlabelled 4D cine NIfTI files, for pretraining on your own data)",
    )
    prepare.add_argument("--root", action="append", type=Path, default=[], help="the dataset's folder (one per --dataset)")
    prepare.add_argument("--out", type=Path, help="cache folder (default: data/cache-<preset>-<cohort> for synthetic data)")
    prepare.add_argument(
        "--preset", choices=("paper", "cpu"),
        help="target grid: 'paper' = 1.25 mm, 256x256 (the study); 'cpu' = 5 mm, 64x64 (same field of view, "
        "laptop speed). Default: paper for your data, cpu for the synthetic cohort",
    )
    prepare.add_argument("--spacing", type=float, help="override the target in-plane spacing in mm")
    prepare.add_argument("--size", type=int, help="override the network input size in pixels")
    prepare.add_argument(
        "--canvas", type=int,
        help="override the stored canvas side in pixels (default 1.5 x size, so augmentation samples real image)",
    )
    prepare.add_argument(
        "--geometry", choices=("auto", "affine", "header"), default="auto",
        help="voxel size and orientation of each file: 'auto' (default) resolves the affine (s/qform) and "
        "pixdim together: when they disagree, pixdim's voxel size with the affine's direction and origin, as "
        "ITK/nnU-Net read NIfTI (real ACDC files carry a 1 mm placeholder sform), unless pixdim is the "
        "placeholder; 'affine' always uses the affine; 'header' always uses pixdim with the affine's direction. "
        "A disagreement is reported once per dataset and kind",
    )
    prepare.add_argument(
        "--workers", type=positive_int, default=DEFAULT_WORKERS,
        help=f"processes decoding subjects in parallel (default {DEFAULT_WORKERS}: this machine's cores, at most 4)",
    )
    prepare.add_argument("--data-dir", type=Path, default=Path("data"), help="where the synthetic cohort and its cache go (default ./data)")
    prepare.add_argument("--synthetic-subjects", type=positive_int, default=24, help="size of the synthetic cohort (default 24)")
    prepare.add_argument("--synthetic-seed", type=int, default=0, help="seed of the synthetic cohort (default 0)")
    prepare.set_defaults(handler=run_prepare)

    split = commands.add_parser(
        "split",
        help="import the study's split file or draw a train/valid/test split, optionally a label-scarce subset",
        description="Write a split JSON (train/valid/test subject keys) for a prepared cache: either "
        "imported from the study's YAML split files (e.g. default-cine-split-nr10-seed0.yaml) or drawn "
        "with a seed. --subset N keeps N training subjects (nested: the 10 of a seed are inside its 15).",
    )
    split.add_argument("--cache", required=True, type=Path, help="prepared cache folder")
    split.add_argument("--out", required=True, type=Path, help="split JSON file to write")
    split.add_argument("--upstream", type=Path, help="a split file of the study (YAML) or of cmrssp (JSON) to import, "
                       "or a published split by name: paper, paper-nr10-seed0 ... paper-nr50-seed2, paper-vendor-A_B, "
                       "paper-vendor-C_D")
    split.add_argument("--test", type=float, default=0.2, help="test subjects: a count (>= 1) or a fraction (< 1) (default 0.2)")
    split.add_argument("--valid-fraction", type=float, default=0.2, help="fraction of the remaining subjects for validation (default 0.2)")
    split.add_argument("--seed", type=int, default=0, help="seed of the drawn split (default 0)")
    split.add_argument("--stratify", choices=("pathology", "vendor"),
                       help="draw test and valid subjects in proportion per group (ACDC: pathology = its five Groups)")
    split.add_argument("--stratify-vendor", action="store_true", help="the same as --stratify vendor")
    split.add_argument("--subset", type=subset_size, help="keep this many training subjects (or 'all')")
    split.add_argument("--subset-seed", type=int, default=0, help="seed of the subset draw (default 0)")
    split.set_defaults(handler=run_split)

    pretrain = commands.add_parser(
        "pretrain",
        help="self-supervised pretraining of the U-Net encoder (SimCLR, PCL, DINO) or whole U-Net (MIM)",
        description="Pretrain on every frame x slice of the training subjects (labels unused; the "
        "validation subjects give a validation loss where the method has one; test subjects are never "
        "seen). Writes checkpoint.pt, metrics.csv and weights-transfer.pt, which `finetune --init "
        "<method>` loads (default folder runs/pretrain-<method>). MIM also writes weights-encoder.pt, "
        "weights-encoder-decoder.pt and example reconstructions.",
    )
    pretrain.add_argument("--method", required=True, choices=("simclr", "pcl", "dino", "mim"),
                          help="simclr: two views, NT-Xent; pcl: positives by slice position; dino: self-distillation "
                          "with 2 global + 6 local crops; mim: masked image modelling with the whole U-Net")
    add_run_options(pretrain)
    pretrain.add_argument("--split", type=Path, help="split file; pretraining uses its train subjects (default: the "
                          "split drawn from the cache, the same one finetune uses)")
    pretrain.set_defaults(handler=run_pretrain)

    finetune = commands.add_parser(
        "finetune",
        help="train the U-Net on labelled subjects: from scratch (the baseline) or from pretrained weights",
        description="Supervised training of the study's U-Net (deep-supervised 0.5 CE + 0.5 Dice, SGD "
        "Nesterov 0.99, poly learning rate, the study's augmentation) on ED/ES slices of N training "
        "subjects, validating every epoch. Without --init it is the from-scratch baseline. With no "
        "--data, the built-in synthetic cohort is prepared once and used. The run folder gets "
        "config.json, split.json, metrics.csv, checkpoint.pt (to --resume), weights-last.pt and "
        "weights-best.pt.",
    )
    add_run_options(finetune)
    finetune.add_argument("--n-subjects", type=subset_size,
                          help="training subjects to keep: a number (10, 15, 25, 50 in the study) or 'all' (default)")
    finetune.add_argument("--subset-seed", type=int, help="seed of the subset draw; subsets of one seed are nested (default 0)")
    finetune.add_argument("--init", help="pretrained weights: a weight file, or simclr|pcl|dino|mim for that "
                          "method's pretraining run in the runs folder (default: from scratch)")
    finetune.add_argument("--freeze-encoder-epochs", type=int,
                          help="keep the encoder frozen for this many epochs (default 0, as the study); from scratch, a "
                          "large value trains the decoder on a random encoder, the baseline of a frozen-encoder probe")
    finetune.add_argument("--split", type=Path, help="split file: the study's YAML (mm1/mm2) or a cmrssp split.json "
                          "(default: a split drawn from the cache, test 20%%, valid 20%%, seed 0)")
    finetune.set_defaults(handler=run_finetune)

    evaluate = commands.add_parser(
        "evaluate",
        help="3D Dice and HD95 of fine-tuned runs on the test subjects, in each subject's original grid",
        description="For each subject of the split and each labelled volume (ED, ES): predict every slice "
        "(head 0), map the class logits back onto the original grid (bicubic, border padding: the exact "
        "inverse of the preprocessing resample), argmax, and score against the original ground truth: Dice "
        "(both empty = 1, one empty = 0, as the study) and HD95 in mm per class. Writes RUN/evaluation-<split>-"
        "<checkpoint>/ with volumes.csv, summary.json and, with --export-nifti, one label NIfTI per volume. "
        "With no --run, evaluates every finished fine-tuning run in the runs folder that has no evaluation "
        "yet, then prints one table of all evaluated runs.",
    )
    evaluate.add_argument("--run", type=Path, action="append", default=[],
                          help="a fine-tuning run folder (repeatable; default: every run in --runs-dir not yet evaluated)")
    evaluate.add_argument("--split", choices=("test", "valid"), default="test", help="subjects to score (default test)")
    evaluate.add_argument("--checkpoint", choices=("last", "best"), default="last",
                          help="weights to evaluate: last (the study's default) or best (lowest validation loss)")
    evaluate.add_argument("--export-nifti", action="store_true",
                          help="also write each predicted volume as NIfTI with the original affine and shape")
    evaluate.add_argument("--source-labels", action="store_true",
                          help="exported NIfTI in the source dataset's label values (e.g. ACDC: 1 RV, 3 LV) instead of 1 LV, 2 MYO, 3 RV")
    evaluate.add_argument("--largest-component", action="store_true",
                          help="keep only the largest 3D connected component per class (off: the study uses no post-processing)")
    evaluate.add_argument("--data", type=Path, help="prepared cache to read (default: the one the run was trained on)")
    evaluate.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where runs are found (default ./runs)")
    evaluate.add_argument("--batch-size", type=positive_int, default=64, help="slices per forward pass (default 64)")
    evaluate.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: CUDA when present)")
    evaluate.set_defaults(handler=run_evaluate)

    predict = commands.add_parser(
        "predict",
        help="segment new cine scans with a fine-tuned run: label NIfTI files, volumes and cardiac measures",
        description="Read each --input (a 3D/4D NIfTI file, or a dataset folder), preprocess it in memory as the "
        "run's training cache was (no cache written, no ground truth needed), predict every frame and slice, map "
        "the logits back onto the scan's own grid and write OUT/<subject>_pred.nii.gz (the input's header), "
        "OUT/volumes.csv (LV, MYO, RV mL per frame) and OUT/measures.csv (EDV, ESV, SV, EF, LV mass, indexed to BSA "
        "when height and weight are known; ED/ES from the dataset, else from the predicted LV volume curve).",
    )
    predict.add_argument("--run", type=Path, required=True, help="a fine-tuning run folder")
    predict.add_argument("--input", type=Path, action="append", required=True,
                         help="a NIfTI file (3D = one frame, 4D cine) or a dataset folder (repeatable)")
    predict.add_argument("--dataset", choices=DATASET_CHOICES,
                         help="layout of the folder inputs (default: detected from the metadata file each layout "
                         "requires; a folder with none is read as loose NIfTI files)")
    predict.add_argument("--out", type=Path, required=True, help="folder for the label files and tables")
    predict.add_argument("--checkpoint", choices=("last", "best"), default="last",
                         help="weights to use: last (default) or best (lowest validation loss)")
    predict.add_argument("--source-labels", action="store_true",
                         help="label files in the source dataset's values (e.g. ACDC: 1 RV, 3 LV) instead of 1 LV, 2 MYO, 3 RV")
    predict.add_argument("--batch-size", type=positive_int, default=64, help="slices per forward pass (default 64)")
    predict.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: CUDA when present)")
    predict.set_defaults(handler=run_predict)

    study = commands.add_parser(
        "study",
        help="the whole study: prepare, pretrain 4 methods, fine-tune a grid, evaluate, write results.md",
        description="Prepare the data (the built-in synthetic cohort without --data); pretrain SimCLR, PCL, "
        "DINO and MIM; fine-tune from each and from scratch for every training-subset size and subset seed; "
        "evaluate every fine-tuned run on the test subjects; write results.md, results.csv (and results.png "
        "with matplotlib) in the runs folder. Stop it at any point and run it again: finished runs and "
        "evaluations are skipped, an interrupted run resumes from its checkpoint. Grids: paper = 10, 15, 25, "
        "50, all subjects x subset seeds 0, 1, 2; cpu = 3 and all x seed 0; tiny = 2 and all x seed 0.",
    )
    study.add_argument("--preset", choices=PRESET_NAMES,
                       help="scale of every run (see `finetune --help`); default paper on CUDA, otherwise cpu "
                       "(cpu-real for the acdc protocol)")
    study.add_argument("--protocol", choices=PROTOCOL_NAMES, default="default",
                       help="which subjects are test / validation / training pool and the subset grid: default (a split "
                       "drawn from the cache; the preset's grid), paper (the study's published split and subset files, "
                       "M&Ms + M&Ms-2), acdc (the 100 ACDC training patients: 20 test, 10 validation stratified by "
                       "Group, subsets 1, 2, 4, 8, 16, all x seeds 0, 1, 2; without --data, a synthetic cohort in the "
                       "ACDC layout)")
    study.add_argument("--data", type=Path, help="prepared cache folder (default: the built-in synthetic cohort)")
    study.add_argument("--split", type=Path, help="split file (the study's YAML or a cmrssp JSON; default: drawn from the cache)")
    study.add_argument("--methods", type=lambda text: tuple(m for m in text.split(",") if m),
                       help="pretraining methods, comma-separated (default simclr,pcl,dino,mim)")
    study.add_argument("--subsets", type=lambda text: tuple(0 if n == "all" else positive_int(n) for n in text.split(",")),
                       help="training-subset sizes, comma-separated, 'all' for every training subject (default: the preset's)")
    study.add_argument("--seeds", type=lambda text: tuple(int(n) for n in text.split(",")),
                       help="subset seeds, comma-separated (default: the preset's)")
    study.add_argument("--dry-run", action="store_true", help="print the plan (runs, their state and estimated cost) and stop")
    study.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    study.add_argument("--gpus", type=lambda text: tuple(int(n) for n in text.split(",")),
                       help="train independent runs at once, one per GPU, e.g. --gpus 0,1,2,3 (pretraining first, "
                       "fine-tuning from a method once its pretraining is done)")
    study.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders and results go (default ./runs)")
    study.add_argument("--data-dir", type=Path, default=Path("data"), help="where the synthetic cohort goes (default ./data)")
    study.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS, help="processes preparing data (default: cores, at most 4)")
    study.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    study.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="change a configuration field in every run that has it, e.g. --set augment.centring=image")
    study.set_defaults(handler=run_study)

    probe = commands.add_parser(
        "probe",
        help="linear probe: how well frozen features (random or pretrained network) separate LV, MYO and RV",
        description="Freeze the network (random, or from pretraining), stack the upsampled feature maps of "
        "un-augmented slices (every encoder level, and every decoder block: the maps MIM's decoder learns), train a "
        "per-pixel linear classifier (1x1 convolution, 0.5 CE + 0.5 soft Dice, Adam) on the training subset and print "
        "validation 2D Dice for each initialisation and feature set, then the mean over subset seeds and the gain over "
        "the random network. About a minute per initialisation and subset on a CPU; writes runs/probe-n<N>-s<seed>.json "
        "per subset and runs/probe-n<N>-summary.json.",
    )
    probe.add_argument("--inits", default="random,simclr,pcl,dino,mim",
                       help="comma-separated: random (a randomly initialised network), a method with weights in the runs "
                       "folder, or a weight file (default random,simclr,pcl,dino,mim)")
    probe.add_argument("--features", default="encoder,decoder",
                       type=lambda text: tuple(name for name in text.split(",") if name),
                       help="comma-separated feature sets: encoder, decoder (default both)")
    probe.add_argument("--n-subjects", type=subset_size, default=2, help="training subjects (default 2)")
    probe.add_argument("--subset-seed", default=(0,), type=lambda text: tuple(int(n) for n in text.split(",") if n),
                       help="seed(s) of the subset draw, comma-separated, e.g. 0,1,2 (default 0)")
    probe.add_argument("--steps", type=positive_int, default=400, help="Adam steps of the linear classifier (default 400)")
    probe.add_argument("--preset", choices=PRESET_NAMES, default="cpu", help="network and grid (default cpu)")
    probe.add_argument("--data", type=Path, help="prepared cache folder (default: the built-in synthetic cohort)")
    probe.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where pretraining runs are (default ./runs)")
    probe.add_argument("--data-dir", type=Path, default=Path("data"), help="where the synthetic cohort goes (default ./data)")
    probe.set_defaults(handler=run_probe)

    info = commands.add_parser("info", help="summarise a prepared cache", description="Print what a prepared cache holds.")
    info.add_argument("--cache", required=True, type=Path, help="prepared cache folder")
    info.set_defaults(handler=run_info)
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options every training command shares."""
    parser.add_argument("--preset", choices=PRESET_NAMES,
                        help="'paper': the study's scale (1.25 mm, 256 px, full U-Net, 1000 epochs); 'cpu': a 2-core "
                        "laptop trains a useful model in minutes (5 mm, 64 px, smaller U-Net); 'cpu-real': the cpu "
                        "network for real scans (40 epochs bounded to 1,000-1,500 updates, validation every 100); "
                        "'tiny': seconds, for tests. Default: paper on CUDA, cpu otherwise")
    parser.add_argument("--data", type=Path, help="prepared cache folder (default: the built-in synthetic cohort)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<a name saying what the run is>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (or the default folder) from its last checkpoint, with its saved configuration")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, help="number of epochs (the study: 1000 for fine-tuning whatever the subset size, 100 for pretraining)")
    length.add_argument("--iterations", type=positive_int, help="an iteration budget instead of epochs (the learning rate then decays per iteration)")
    parser.add_argument("--lr", type=float, help="base learning rate, the from-scratch one (default: the preset's); a fine-tune with --init trains at "
                        "init_lr_factor times it (0.5, the study: 0.01 -> 0.005; --set init_lr_factor=1 for the full rate)")
    parser.add_argument("--batch-size", type=positive_int, help="training batch size in slices (the study: 32 for fine-tuning; per method for pretraining)")
    parser.add_argument("--seed", type=int, help="training seed: initialisation, data order, augmentation (default 0)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), help="mixed precision (default auto: bf16/fp16 on CUDA, off on CPU)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where default run folders go (default ./runs)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where the synthetic cohort goes (default ./data)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="change any configuration field, e.g. --set augment.intensity_scale_mode=factor or "
        "--set augment.centring=image (the protocol switches are listed in the README); repeatable",
    )


def default_preset(args: argparse.Namespace, cpu: str = "cpu") -> str:
    import torch

    if args.preset:
        return args.preset
    preset = "paper" if torch.cuda.is_available() else cpu
    print(f"preset: {preset} ({'CUDA found' if preset == 'paper' else 'no CUDA'}; choose with --preset)")
    return preset


def with_run_flags(config, args: argparse.Namespace, lr: float | None, **data_changes):
    """Apply the options every training command shares (see add_run_options) to a preset."""
    from cmrssp.config import apply_overrides
    from cmrssp.presets import replace

    data = replace(config.data, cache=str(args.data) if args.data else None,
                   split=str(args.split) if args.split else None, **data_changes)
    train = replace(config.train, seed=args.seed, device=args.device, amp=args.amp, batch_size=args.batch_size)
    if args.epochs is not None:
        train = replace(train, epochs=args.epochs, iterations=0)
    if args.iterations is not None:
        train = replace(train, iterations=args.iterations)
    config = replace(config, data=data, train=train, optimizer=replace(config.optimizer, lr=lr))
    return apply_overrides(config, args.set)


@contextlib.contextmanager
def processes_of_this_run(config):
    """Under torchrun, join the process group (one device per process) for the run's length."""
    from cmrssp.distributed import start, stop
    from cmrssp.presets import replace

    processes, device = start(config.train.device)
    try:
        yield replace(config, train=replace(config.train, device=device)), processes
    finally:
        stop()


def on_saved_config(config, args: argparse.Namespace, run_dir: Path, flags):
    """With --resume, the command's flags applied to the run's saved configuration instead of
    the preset's, so that only the flags actually given count (resume_config refuses changes)."""
    from cmrssp.presets import replace
    from cmrssp.runs import saved_config

    if not args.resume:
        return config
    return flags(replace(saved_config(type(config), run_dir), preset=args.preset))


def run_finetune(args: argparse.Namespace) -> None:
    from cmrssp.finetune import default_run_name, run_finetune as finetune
    from cmrssp.presets import finetune_preset, replace

    def flags(config):
        config = replace(config, init=args.init, freeze_encoder_epochs=args.freeze_encoder_epochs)
        n_subjects = None if args.n_subjects is None else (0 if args.n_subjects == "all" else args.n_subjects)
        return with_run_flags(config, args, args.lr, n_subjects=n_subjects, subset_seed=args.subset_seed)

    config = flags(finetune_preset(default_preset(args)))
    config = on_saved_config(config, args, args.out or args.runs_dir / default_run_name(config), flags)
    with processes_of_this_run(config) as (config, processes):
        run_dir = finetune(config, run_dir=args.out, runs_dir=args.runs_dir, data_dir=args.data_dir, resume=args.resume,
                           progress=not args.no_progress, processes=processes)
        if processes.is_main:
            print(f"done: {run_dir}")


def run_pretrain(args: argparse.Namespace) -> None:
    from cmrssp.presets import pretrain_preset, replace
    from cmrssp.pretrain import run_pretrain as pretrain

    flags = lambda config: with_run_flags(replace(config, method=args.method), args, args.lr)  # noqa: E731
    config = flags(pretrain_preset(default_preset(args), args.method))
    config = on_saved_config(config, args, args.out or args.runs_dir / f"pretrain-{args.method}", flags)
    with processes_of_this_run(config) as (config, processes):
        run_dir = pretrain(config, run_dir=args.out, runs_dir=args.runs_dir, data_dir=args.data_dir, resume=args.resume,
                           progress=not args.no_progress, processes=processes)
        if processes.is_main:
            print(f"done: {run_dir} (fine-tune from it with: python run.py finetune --init {args.method})")


def run_evaluate(args: argparse.Namespace) -> None:
    from cmrssp.evaluate import EvaluateOptions, evaluate_pending, evaluate_run, run_evaluation
    from cmrssp.results import format_runs_table

    options = EvaluateOptions(split=args.split, checkpoint=args.checkpoint, export_nifti=args.export_nifti,
                              label_convention="source" if args.source_labels else "canonical",
                              largest_component=args.largest_component, data=str(args.data or ""),
                              batch_size=args.batch_size, device=args.device).validate()
    if args.run:
        for run in args.run:
            evaluate_run(run, options)
        evaluations = [run_evaluation(run, options) for run in args.run]
    else:
        evaluations = evaluate_pending(args.runs_dir, options)
    print(format_runs_table(evaluations))


def run_predict(args: argparse.Namespace) -> None:
    from cmrssp.predict import predict_inputs

    predict_inputs(args.run, args.input, args.out, checkpoint=args.checkpoint, dataset=args.dataset,
                   label_convention="source" if args.source_labels else "canonical",
                   batch_size=args.batch_size, device=args.device)


def run_study(args: argparse.Namespace) -> None:
    import dataclasses

    from cmrssp.evaluate import EvaluateOptions
    from cmrssp.presets import replace
    from cmrssp.protocols import get_protocol
    from cmrssp.study import override, run_study as study

    protocol = get_protocol(args.protocol)
    preset = default_preset(args, cpu=protocol.preferred_cpu_preset)
    grid = replace(protocol.grid_for(preset), methods=args.methods, subsets=args.subsets, seeds=args.seeds)
    with_flags = override(args.set)

    def adjust(config):
        data = replace(config.data, cache=str(args.data) if args.data else None, split=str(args.split) if args.split else None)
        train = replace(config.train, device=args.device)
        return with_flags(dataclasses.replace(config, data=data, train=train))

    devices = gpu_devices(args.gpus) if args.gpus else ()
    study(preset, grid, runs_dir=args.runs_dir, data_dir=args.data_dir, adjust=adjust,
          evaluate=EvaluateOptions(device=args.device or (devices[0] if devices else "auto")), dry_run=args.dry_run,
          workers=args.workers, progress=not args.no_progress, devices=devices, protocol=protocol)


def gpu_devices(indices: tuple[int, ...]) -> tuple[str, ...]:
    import torch

    available = torch.cuda.device_count()
    missing = [i for i in indices if not 0 <= i < available]
    if missing:
        raise InputError(None, f"--gpus {','.join(map(str, indices))}: this machine has {available} CUDA device(s); "
                               f"no GPU {missing[0]}")
    return tuple(f"cuda:{i}" for i in indices)


def run_probe(args: argparse.Namespace) -> None:
    from cmrssp.atomic import write_json
    from cmrssp.presets import finetune_preset, replace
    from cmrssp.probe import ProbeConfig, run_probe as probe, summarize_probes
    from cmrssp.table import format_table

    config = finetune_preset(args.preset)
    inits = ["" if init == "random" else init for init in args.inits.split(",") if init]
    if not inits or not args.subset_seed:
        raise InputError(None, "probe needs at least one init (--inits) and one subset seed (--subset-seed)")
    rows = []
    for seed in args.subset_seed:
        data = replace(config.data, cache=str(args.data) if args.data else None,
                       n_subjects=0 if args.n_subjects == "all" else args.n_subjects, subset_seed=seed)
        rows += probe(replace(config, data=data), inits, ProbeConfig(steps=args.steps), runs_dir=args.runs_dir,
                      data_dir=args.data_dir, features=args.features)
    print(format_table(rows))
    summary = summarize_probes(rows)
    if len(args.subset_seed) > 1:
        out = args.runs_dir / f"probe-n{args.n_subjects}-summary.json"
        write_json(out, {"subset_seeds": list(args.subset_seed), "rows": summary})
        print(f"mean over subset seeds {','.join(map(str, args.subset_seed))} (written {out}):")
    print(format_table(summary))


def run_phantom(args: argparse.Namespace) -> None:
    from cmrssp.data.phantom import write_cohort
    from cmrssp.table import format_table

    rows = write_cohort(args.out, args.subjects, seed=args.seed, layout=args.layout, preset=args.preset, workers=args.workers)
    if args.report:
        print(format_table(rows))
    print(f"wrote {len(rows)} subjects to {args.out} (QA: {args.out / 'phantom_qa.csv'})")


def run_prepare(args: argparse.Namespace) -> None:
    import dataclasses

    from cmrssp.config import PREPARE_PRESETS, SyntheticCohortConfig
    from cmrssp.data.prepare import prepare_datasets
    from cmrssp.data.synthetic import prepare_synthetic

    preset = args.preset or ("paper" if args.dataset else "cpu")
    config = PREPARE_PRESETS[preset]
    overrides = {k: getattr(args, k) for k in ("spacing", "size", "canvas", "geometry") if getattr(args, k) is not None}
    config = dataclasses.replace(config, **overrides).validate()
    if len(args.dataset) != len(args.root):
        raise InputError(None, f"give one --root per --dataset (got {len(args.dataset)} --dataset and {len(args.root)} --root)")
    if not args.dataset:
        cohort = SyntheticCohortConfig(subjects=args.synthetic_subjects, seed=args.synthetic_seed)
        cache = prepare_synthetic(cohort, config, data_dir=args.data_dir, cache_dir=args.out, workers=args.workers)
        print(f"synthetic cohort prepared in {cache}")
        return
    if args.out is None:
        raise InputError(None, "--out CACHE is required when --dataset is given")
    summary = prepare_datasets(list(zip(args.dataset, args.root)), args.out, config, workers=args.workers)
    print(summary.describe())


def run_split(args: argparse.Namespace) -> None:
    from cmrssp.data.cache import open_cache
    from cmrssp.data.splits import label_scarce_subset, read_split_file
    from cmrssp.presets import DataConfig
    from cmrssp.runs import study_split

    cache = open_cache(args.cache)
    if args.upstream is not None:
        split = read_split_file(args.upstream, available_keys=cache.keys)
    else:  # the rule finetune and study draw with, so the file holds the split they would use
        stratify = args.stratify or ("vendor" if args.stratify_vendor else "")
        data = DataConfig(test_fraction=args.test, valid_fraction=args.valid_fraction, split_seed=args.seed, stratify=stratify)
        split = study_split(data, cache)
    if args.subset is not None:
        split = label_scarce_subset(split, args.subset, seed=args.subset_seed)
    split.save(args.out)
    print(f"train {len(split.train)}, valid {len(split.valid)}, test {len(split.test)} subjects -> {args.out}")


def run_info(args: argparse.Namespace) -> None:
    from cmrssp.data.cache import open_cache

    print(open_cache(args.cache).describe())


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as the user reads them: what happened, not where in cmrssp it was raised."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning
    args = build_parser().parse_args(argv)
    from cmrssp.train import TrainingError

    try:
        args.handler(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

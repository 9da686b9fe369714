"""cmrssp command line: one entry point, one subcommand per step of the study.

    cmrssp phantom  --out DIR           write a synthetic short-axis cine cohort
    cmrssp prepare  [--dataset D --root DIR]... --out CACHE
                                        decode subjects once into a training cache
    cmrssp split    --cache CACHE --out split.json
                                        import or draw a train/valid/test split
    cmrssp info     --cache CACHE       what a prepared cache holds
    cmrssp pretrain --method M          self-supervised pretraining (simclr, pcl, dino, mim)
    cmrssp finetune [--n-subjects N] [--init M]
                                        the from-scratch baseline or fine-tuning
    cmrssp evaluate [--run RUN]         3D Dice, HD95 and clinical measures in original space
    cmrssp predict  --run RUN --input SCAN --out DIR
                                        segment new scans: labels, volume curves, EF, mass
    cmrssp study                        all of it: prepare, pretrain, fine-tune, evaluate, results
    cmrssp results  --runs-dir A [--runs-dir B]... --out DIR
                                        one results table from several runs folders (a study split up)
    cmrssp probe                        linear probe of random vs pretrained encoder features

``cmrssp X`` (the console script) and ``python run.py X`` are the same. Each subcommand's --help
explains its options. Every flag is defined once below (``Options``) and means the same in every
command that takes it: ``--split`` is always a split file, ``--n-subjects`` / ``--subset-seed``
the label-scarce subset (a comma-separated list where a command runs several). Bad input ends
with one line naming the file and the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Callable

from cmrssp.errors import InputError
from cmrssp.methods import REGISTRY as METHOD_REGISTRY
from cmrssp.scheduler import available_cores

# the names only, so that --help needs no torch import (tests check they match the package's)
PRESET_NAMES = ("paper", "cpu", "cpu-real", "tiny")
PROTOCOL_NAMES = ("default", "paper", "acdc")
GRID_NAMES = ("paper", "cpu")  # cmrssp.config.PREPARE_PRESETS
PHANTOM_SCALES = ("default", "tiny")  # cmrssp.data.phantom.PHANTOM_PRESETS
METHOD_NAMES = tuple(entry.name for entry in METHOD_REGISTRY)

DATASET_CHOICES = ("mnms", "mnms2", "acdc", "nnunet", "folder")
DEFAULT_WORKERS = min(4, available_cores())


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def subset_size(text: str) -> int:
    """A label-scarce subset size: a positive number, or 'all' (0)."""
    return 0 if text == "all" else positive_int(text)


def comma_list(item: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(item(part) for part in text.split(",") if part)

    return parse


def _one_or_several(several: bool, item: Callable[[str], Any], help_one: str, help_several: str) -> dict:
    """argparse settings of a flag that takes one value, or (``several``) a comma-separated list."""
    return dict(type=comma_list(item), help=help_several) if several else dict(type=item, help=help_one)


class Options:
    """Every flag that more than one command takes, each defined once."""

    @staticmethod
    def data(parser, help="prepared cache folder (default: the built-in synthetic cohort)"):
        parser.add_argument("--data", type=Path, help=help)

    @staticmethod
    def data_dir(parser):
        parser.add_argument("--data-dir", type=Path, default=Path("data"),
                            help="where the synthetic cohort and its cache go (default ./data)")

    @staticmethod
    def runs_dir(parser, help="where run folders are (default ./runs)", several=False):
        parser.add_argument("--runs-dir", type=Path, help=help,
                            **(dict(action="append", default=[]) if several else dict(default=Path("runs"))))

    @staticmethod
    def split(parser, help="split file: the study's YAML, a cmrssp split.json, or a published split by name (paper, "
                           "paper-nr10-seed0 ... paper-nr50-seed2, paper-vendor-A_B, paper-vendor-C_D); default: a split "
                           "drawn from the cache"):
        parser.add_argument("--split", type=Path, help=help)

    @staticmethod
    def cache(parser):
        parser.add_argument("--cache", required=True, type=Path, help="prepared cache folder")

    @staticmethod
    def out(parser, help, required=False):
        parser.add_argument("--out", type=Path, required=required, help=help)

    @staticmethod
    def preset(parser, default=None, help=None):
        parser.add_argument(
            "--preset", choices=PRESET_NAMES, default=default,
            help=help or "'paper': the study's scale (1.25 mm, 256 px, full U-Net, 1000 epochs); 'cpu': a 2-core laptop "
            "trains a useful model in minutes (5 mm, 64 px, smaller U-Net); 'cpu-real': the cpu network for real scans "
            "(100 epochs bounded to 1,000-2,000 updates, validation every 100); 'tiny': seconds, for tests. Default: "
            "paper on CUDA, cpu otherwise")

    @staticmethod
    def protocol(parser, help):
        parser.add_argument("--protocol", choices=PROTOCOL_NAMES, default="default", help=help)

    @staticmethod
    def device(parser):
        parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")

    @staticmethod
    def workers(parser, what="preparing data"):
        parser.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS,
                            help=f"processes {what} in parallel (default {DEFAULT_WORKERS}: this machine's cores, at most 4)")

    @staticmethod
    def no_progress(parser):
        parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")

    @staticmethod
    def set_fields(parser, help="change any configuration field, e.g. --set augment.intensity_scale_mode=factor or "
                                "--set augment.centring=image (the protocol switches are listed in the README); repeatable"):
        parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help=help)

    @staticmethod
    def n_subjects(parser, several=False, default=None):
        parser.add_argument("--n-subjects", default=default, **_one_or_several(
            several, subset_size, "training subjects to keep: a number (10, 15, 25, 50 in the study) or 'all'",
            "label-scarce subset sizes, comma-separated, 'all' for every training subject"))

    @staticmethod
    def subset_seed(parser, several=False, default=None):
        parser.add_argument("--subset-seed", default=default, **_one_or_several(
            several, int, "seed of the subset draw; subsets of one seed are nested (default 0)",
            "seed(s) of the subset draw, comma-separated, e.g. 0,1,2; subsets of one seed are nested"))

    @staticmethod
    def dataset(parser, several=False):
        parser.add_argument("--dataset", choices=DATASET_CHOICES, **(
            dict(action="append", default=[], help="layout of the next --root: mnms, mnms2, acdc, nnunet (raw "
                 "imagesTr/labelsTr) or folder (unlabelled 4D cine NIfTI files, for pretraining on your own data)")
            if several else
            dict(help="layout of the folder inputs (default: detected from the metadata file each layout requires; a "
                 "folder with none is read as loose NIfTI files)")))

    @staticmethod
    def run(parser, several=False):
        parser.add_argument("--run", type=Path, **(
            dict(action="append", default=[], help="a fine-tuning run folder (repeatable; default: every run in "
                 "--runs-dir not yet evaluated)")
            if several else dict(required=True, help="a fine-tuning run folder")))

    @staticmethod
    def on(parser, what="score"):
        parser.add_argument("--on", choices=("test", "valid"), default="test",
                            help=f"which subjects of the run's split to {what} (default test)")

    @staticmethod
    def checkpoint(parser, what="weights to use"):
        parser.add_argument("--checkpoint", choices=("last", "best"), default="last",
                            help=f"{what}: last (the study's default) or best (lowest validation loss)")

    @staticmethod
    def source_labels(parser):
        parser.add_argument("--source-labels", action="store_true",
                            help="label files in the source dataset's values (e.g. ACDC: 1 RV, 3 LV) instead of 1 LV, 2 MYO, 3 RV")

    @staticmethod
    def batch_size(parser, help="slices per forward pass (default 64)", default=64):
        parser.add_argument("--batch-size", type=positive_int, default=default, help=help)

    @classmethod
    def training(cls, parser):
        """The options of every training command (pretrain, finetune)."""
        cls.preset(parser)
        cls.data(parser)
        cls.split(parser)
        cls.out(parser, "run folder (default: runs/<a name saying what the run is>)")
        parser.add_argument("--resume", action="store_true", help="continue the run in --out (or the default folder) "
                            "from its last checkpoint, with its saved configuration")
        length = parser.add_mutually_exclusive_group()
        length.add_argument("--epochs", type=positive_int, help="number of epochs (the study: 1000 for fine-tuning "
                            "whatever the subset size, 100 for pretraining)")
        length.add_argument("--iterations", type=positive_int, help="an iteration budget instead of epochs (the learning "
                            "rate then decays per iteration)")
        parser.add_argument("--lr", type=float, help="base learning rate, the from-scratch one (default: the preset's); a "
                            "fine-tune with --init trains at init_lr_factor times it (0.5, the study: 0.01 -> 0.005; "
                            "--set init_lr_factor=1 for the full rate)")
        cls.batch_size(parser, help="training batch size in slices (the study: 32 for fine-tuning; per method for "
                       "pretraining)", default=None)
        parser.add_argument("--seed", type=int, help="training seed: initialisation, data order, augmentation (default 0)")
        cls.device(parser)
        parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"),
                            help="mixed precision (default: the preset's; auto = bf16/fp16 on CUDA, off on CPU)")
        cls.runs_dir(parser, "where default run folders go (default ./runs)")
        cls.data_dir(parser)
        cls.no_progress(parser)
        cls.set_fields(parser)


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: an abbreviation such as --subset would otherwise silently mean --subset-seed
    parser = argparse.ArgumentParser(
        prog="cmrssp", allow_abbrev=False,
        description="Self-supervised pretraining for CMR cine segmentation (de Mooij et al. 2024), "
        "in plain PyTorch. With no data given, every step uses a built-in synthetic cine cohort.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `cmrssp <command> --help` (or `python run.py <command> --help`) for the options of one command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, handler, help: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=description, allow_abbrev=False)
        sub.set_defaults(handler=handler)
        return sub

    phantom = command(
        "phantom", run_phantom, "write a labelled synthetic short-axis cine cohort in a real dataset's layout",
        "Write a synthetic cine cohort (LV, myocardium, RV with cardiac motion, surroundings, bSSFP-like contrast, "
        "vendor profiles) in the on-disk layout of M&Ms, M&Ms-2 or ACDC, plus phantom_qa.csv with per-subject "
        "volumes and ejection fractions.")
    Options.out(phantom, "folder to create (must be new or empty)", required=True)
    phantom.add_argument("--subjects", type=positive_int, default=20, help="number of subjects (default 20)")
    phantom.add_argument("--cohort-seed", type=int, default=0, help="cohort seed; the same seed gives the same files (default 0)")
    phantom.add_argument("--layout", choices=("mnms", "mnms2", "acdc"), default="mnms",
                         help="which dataset's file names, CSV/Info.cfg and label convention to write (default mnms)")
    phantom.add_argument("--scale", choices=PHANTOM_SCALES, default="default",
                         help="'default': realistic size (~256x216 px, 8-14 slices, 18-35 frames); 'tiny': small test subjects")
    Options.workers(phantom, "generating subjects")
    phantom.add_argument("--report", action="store_true", help="also print the per-subject QA table")

    prepare = command(
        "prepare", run_prepare, "decode subjects once into a cache that training reads (no NIfTI at training time)",
        "Read each subject once, resample it in-plane to the target spacing on a fixed canvas, standardise it with its "
        "own statistics, and store images (float16), labels (uint8), the original-grid labels and all geometry needed "
        "to map predictions back to the original grid. Repeat --dataset/--root pairs (or call again with the same --out) "
        "to put several datasets into one cohort, e.g. M&Ms + M&Ms-2 as in the study. Subjects already in the cache are "
        "skipped. With no --dataset, the built-in synthetic cohort is generated and prepared.")
    Options.dataset(prepare, several=True)
    prepare.add_argument("--root", action="append", type=Path, default=[], help="the dataset's folder (one per --dataset)")
    Options.out(prepare, "cache folder (default: data/cache-<grid>-<cohort> for synthetic data)")
    prepare.add_argument("--grid", choices=GRID_NAMES,
                         help="target grid: 'paper' = 1.25 mm, 256x256 (the study); 'cpu' = 5 mm, 64x64 (same field of "
                         "view, laptop speed). Default: paper for your data, cpu for the synthetic cohort")
    prepare.add_argument("--spacing", type=float, help="override the target in-plane spacing in mm")
    prepare.add_argument("--size", type=int, help="override the network input size in pixels")
    prepare.add_argument("--canvas", type=int, help="override the stored canvas side in pixels (default 1.5 x size, so "
                         "augmentation samples real image)")
    prepare.add_argument(
        "--geometry", choices=("auto", "affine", "header"), default="auto",
        help="voxel size and orientation of each file: 'auto' (default) resolves the affine (s/qform) and pixdim "
        "together: when they disagree, pixdim's voxel size with the affine's direction and origin, as ITK/nnU-Net read "
        "NIfTI (real ACDC files carry a 1 mm placeholder sform), unless pixdim is the placeholder; 'affine' always uses "
        "the affine; 'header' always uses pixdim with the affine's direction. A disagreement is reported once per "
        "dataset and kind")
    Options.workers(prepare, "decoding subjects")
    Options.data_dir(prepare)
    prepare.add_argument("--synthetic-subjects", type=positive_int, default=24, help="size of the synthetic cohort (default 24)")
    prepare.add_argument("--synthetic-seed", type=int, default=0, help="seed of the synthetic cohort (default 0)")

    split = command(
        "split", run_split,
        "import the study's split file or draw a train/valid/test split, optionally a label-scarce subset",
        "Write a split JSON (train/valid/test subject keys) for a prepared cache: either imported (--split: the study's "
        "YAML split files, e.g. default-cine-split-nr10-seed0.yaml, a cmrssp JSON, or a published split by name) or "
        "drawn with a seed. --n-subjects N keeps N training subjects (nested: the 10 of a seed are inside its 15).")
    Options.cache(split)
    Options.out(split, "split JSON file to write", required=True)
    Options.split(split, help="a split file to import: the study's YAML, a cmrssp JSON, or a published split by name "
                  "(paper, paper-nr10-seed0 ... paper-nr50-seed2, paper-vendor-A_B, paper-vendor-C_D)")
    split.add_argument("--test", type=float, default=0.2, help="test subjects: a count (>= 1) or a fraction (< 1) (default 0.2)")
    split.add_argument("--valid-fraction", type=float, default=0.2, help="fraction of the remaining subjects for validation (default 0.2)")
    split.add_argument("--split-seed", type=int, default=0, help="seed of the drawn split (default 0)")
    split.add_argument("--stratify", choices=("pathology", "vendor"),
                       help="draw test and valid subjects in proportion per group (ACDC: pathology = its five Groups)")
    Options.n_subjects(split)
    Options.subset_seed(split, default=0)

    pretrain = command(
        "pretrain", run_pretrain,
        "self-supervised pretraining of the U-Net encoder (SimCLR, PCL, DINO) or whole U-Net (MIM)",
        "Pretrain on every frame x slice of the training subjects (labels unused; the validation subjects give a "
        "validation loss where the method has one; test subjects are never seen). Writes checkpoint.pt, metrics.csv, "
        "log.txt and weights-transfer.pt, which `finetune --init <method>` loads (default folder runs/pretrain-<method>). "
        "MIM also writes weights-encoder.pt, weights-encoder-decoder.pt and example reconstructions.")
    pretrain.add_argument("--method", required=True, choices=METHOD_NAMES,
                          help="; ".join(f"{entry.name}: {entry.help}" for entry in METHOD_REGISTRY))
    Options.training(pretrain)

    finetune = command(
        "finetune", run_finetune,
        "train the U-Net on labelled subjects: from scratch (the baseline) or from pretrained weights",
        "Supervised training of the study's U-Net (deep-supervised 0.5 CE + 0.5 Dice, SGD Nesterov 0.99, poly learning "
        "rate, the study's augmentation) on ED/ES slices of N training subjects, validating every epoch. Without --init "
        "it is the from-scratch baseline. With no --data, the built-in synthetic cohort is prepared once and used. The "
        "run folder gets config.json, split.json, metrics.csv, log.txt, checkpoint.pt (to --resume), weights-last.pt "
        "and weights-best.pt.")
    Options.training(finetune)
    Options.n_subjects(finetune)
    Options.subset_seed(finetune)
    finetune.add_argument("--init", help="pretrained weights: a weight file, or "
                          f"{'|'.join(METHOD_NAMES)} for that method's pretraining run in the runs folder (default: from scratch)")
    finetune.add_argument("--freeze-encoder-epochs", type=int,
                          help="keep the encoder frozen for this many epochs (default 0, as the study); from scratch, a "
                          "large value trains the decoder on a random encoder, the baseline of a frozen-encoder probe")

    evaluate = command(
        "evaluate", run_evaluate,
        "3D Dice and HD95 of fine-tuned runs on the test subjects, in each subject's original grid",
        "For each subject of the run's split and each labelled volume (ED, ES): predict every slice (head 0), map the "
        "class logits back onto the original grid (bicubic, border padding: the exact inverse of the preprocessing "
        "resample), argmax, and score against the original ground truth: Dice (both empty = 1, one empty = 0, as the "
        "study) and HD95 in mm per class, plus the clinical measures. Writes RUN/evaluation-<test|valid>-<checkpoint>/ "
        "with volumes.csv, summary.json, measures.csv, agreement.csv and, with --export-nifti, one label NIfTI per "
        "volume. With no --run, evaluates every finished fine-tuning run in the runs folder that has no evaluation yet, "
        "then prints one table of all evaluated runs.")
    Options.run(evaluate, several=True)
    Options.on(evaluate)
    Options.checkpoint(evaluate)
    evaluate.add_argument("--export-nifti", action="store_true",
                          help="also write each predicted volume as NIfTI with the original affine and shape")
    Options.source_labels(evaluate)
    evaluate.add_argument("--largest-component", action="store_true",
                          help="keep only the largest 3D connected component per class (off: the study uses no post-processing)")
    Options.data(evaluate, help="prepared cache to read (default: the one the run was trained on)")
    Options.runs_dir(evaluate)
    Options.batch_size(evaluate)
    Options.device(evaluate)

    predict = command(
        "predict", run_predict,
        "segment new cine scans with a fine-tuned run: label NIfTI files, volumes and cardiac measures",
        "Read each --input (a 3D/4D NIfTI file, or a dataset folder), preprocess it in memory as the run's training "
        "cache was (no cache written, no ground truth needed), predict every frame and slice, map the logits back onto "
        "the scan's own grid and write OUT/<subject>_pred.nii.gz (the input's header), OUT/volumes.csv (LV, MYO, RV mL "
        "per frame) and OUT/measures.csv (EDV, ESV, SV, EF, LV mass, indexed to BSA when height and weight are known; "
        "ED/ES from the dataset, else from the predicted LV volume curve).")
    Options.run(predict)
    predict.add_argument("--input", type=Path, action="append", required=True,
                         help="a NIfTI file (3D = one frame, 4D cine) or a dataset folder (repeatable)")
    Options.dataset(predict)
    Options.out(predict, "folder for the label files and tables", required=True)
    Options.checkpoint(predict)
    Options.source_labels(predict)
    Options.batch_size(predict)
    Options.device(predict)

    study = command(
        "study", run_study, "the whole study: prepare, pretrain 4 methods, fine-tune a grid, evaluate, write results.md",
        "Prepare the data (the built-in synthetic cohort without --data); pretrain SimCLR, PCL, DINO and MIM; fine-tune "
        "from each and from scratch for every training-subset size and subset seed; evaluate every fine-tuned run on the "
        "test subjects; write results.md, results.csv (and results.png with matplotlib) in the runs folder. Stop it at "
        "any point and run it again: finished runs and evaluations are skipped, an interrupted run resumes from its "
        "checkpoint. Grids: paper = 10, 15, 25, 50, all subjects x subset seeds 0, 1, 2; cpu = 3 and all x seed 0; "
        "tiny = 2 and all x seed 0.")
    Options.preset(study, help="scale of every run (see `finetune --help`); default paper on CUDA, otherwise cpu "
                   "(cpu-real for the acdc protocol)")
    Options.protocol(study, "which subjects are test / validation / training pool and the subset grid: default (a "
                     "split drawn from the cache; the preset's grid), paper (the study's published split and subset "
                     "files, M&Ms + M&Ms-2), acdc (the 100 ACDC training patients: 20 test, 10 validation stratified "
                     "by Group, subsets 1, 2, 4, 8, 16, all x seeds 0, 1, 2; without --data, a synthetic cohort in the "
                     "ACDC layout)")
    Options.data(study)
    Options.split(study)
    study.add_argument("--methods", type=comma_list(str), help=f"pretraining methods, comma-separated (default "
                       f"{','.join(METHOD_NAMES)})")
    Options.n_subjects(study, several=True)
    Options.subset_seed(study, several=True)
    study.add_argument("--dry-run", action="store_true", help="print the plan (runs, their state and estimated cost) and stop")
    Options.device(study)
    study.add_argument("--gpus", type=comma_list(int),
                       help="train independent runs at once, one per GPU, e.g. --gpus 0,1,2,3 (pretraining first, "
                       "fine-tuning from a method once its pretraining is done)")
    study.add_argument("--cpu-runs", type=positive_int,
                       help="train this many independent runs at once on the CPU, sharing its cores (default: 2 when "
                       "training on a CPU with 2 or more cores, which trains 1.4x faster on 2 cores than one run at a "
                       "time; 1 trains them one after another)")
    Options.runs_dir(study, "where run folders and results go (default ./runs)")
    Options.data_dir(study)
    Options.workers(study)
    Options.no_progress(study)
    Options.set_fields(study, help="change a configuration field in every run that has it, e.g. --set "
                       "augment.centring=image; repeatable")

    results = command(
        "results", run_results,
        "one results table from the evaluated fine-tunes of one or several runs folders",
        "Gather every evaluated fine-tuning run of each --runs-dir (for instance the subset seeds of one study, each run "
        "by `study --subset-seed S --runs-dir RUNS-S` on its own machine) and write results.md, results.csv (and "
        "results.png with matplotlib) and convergence.txt to --out, with the study's statistics: mean over subset "
        "seeds, difference to scratch, paired Wilcoxon test over the test volumes averaged over seeds. Runs trained "
        "with another configuration (other than init and subset), scored on other test volumes, or present twice are "
        "refused. Reads run folders only, never weights; a finished run without an evaluation is named and left out.")
    Options.runs_dir(results, "a runs folder to gather from (repeatable; default ./runs)", several=True)
    Options.out(results, "folder for the result files (default: the --runs-dir when only one is given)")
    Options.on(results, what="gather the evaluation of")
    Options.checkpoint(results, what="gather the evaluation of which weights")

    probe = command(
        "probe", run_probe,
        "linear probe: how well frozen features (random or pretrained network) separate LV, MYO and RV",
        "Freeze the network (random, or from pretraining), stack the upsampled feature maps of un-augmented slices "
        "(every encoder level, and every decoder block: the maps MIM's decoder learns), train a per-pixel linear "
        "classifier (1x1 convolution, 0.5 CE + 0.5 soft Dice, Adam) on the training subset and print validation 2D Dice "
        "for each initialisation and feature set, then the mean over subset seeds and the gain over the random network. "
        "About a minute per initialisation and subset on a CPU; writes runs/probe-n<N>-s<seed>.json per subset and "
        "runs/probe-n<N>-summary.json.")
    probe.add_argument("--inits", default="random," + ",".join(METHOD_NAMES),
                       help="comma-separated: random (a randomly initialised network), a method with weights in the runs "
                       f"folder, or a weight file (default random,{','.join(METHOD_NAMES)})")
    probe.add_argument("--features", default=("encoder", "decoder"), type=comma_list(str),
                       help="comma-separated feature sets: encoder, decoder (default both)")
    Options.n_subjects(probe, default=2)
    Options.subset_seed(probe, several=True, default=(0,))
    probe.add_argument("--steps", type=positive_int, default=400, help="Adam steps of the linear classifier (default 400)")
    Options.preset(probe, help="network and grid (default cpu; cpu-real for the acdc protocol)")
    Options.protocol(probe, "the split the subsets are drawn from, as `study --protocol` (default: a split drawn from "
                     "the cache; acdc: the ACDC study's 20 test and 10 validation patients, stratified by Group)")
    Options.data(probe)
    Options.runs_dir(probe, "where pretraining runs are and probe results go (default ./runs)")
    Options.data_dir(probe)

    info = command("info", run_info, "summarise a prepared cache", "Print what a prepared cache holds.")
    Options.cache(info)
    return parser


# -- applying the command line to a configuration ------------------------------------------------

def default_preset(args: argparse.Namespace, cpu: str = "cpu") -> str:
    import torch

    if args.preset:
        return args.preset
    preset = "paper" if torch.cuda.is_available() else cpu
    print(f"preset: {preset} ({'CUDA found' if preset == 'paper' else 'no CUDA'}; choose with --preset)")
    return preset


DATA_FIELDS = ("n_subjects", "subset_seed")  # changes that belong to the data section


def configure(config, args: argparse.Namespace, only_sections_present: bool = False, **changes):
    """The one way flags reach a run configuration: every shared option this command has and
    the user gave (data, split, seed, device, precision, batch, length, lr), then ``changes``
    (None = not given), then ``--set``. With ``only_sections_present`` (the study), a ``--set``
    goes only to configurations that have its section."""
    from cmrssp.config import apply_overrides, to_dict
    from cmrssp.presets import replace

    given = lambda name: getattr(args, name, None)  # noqa: E731 (flags this command lacks count as not given)
    as_text = lambda path: None if path is None else str(path)  # noqa: E731
    data = replace(config.data, cache=as_text(given("data")), split=as_text(given("split")),
                   **{k: v for k, v in changes.items() if k in DATA_FIELDS})
    train = replace(config.train, seed=given("seed"), device=given("device"), amp=given("amp"),
                    batch_size=given("batch_size"))
    if given("epochs") is not None:
        train = replace(train, epochs=given("epochs"), iterations=0)
    if given("iterations") is not None:
        train = replace(train, iterations=given("iterations"))
    config = replace(config, data=data, train=train, optimizer=replace(config.optimizer, lr=given("lr")),
                     **{k: v for k, v in changes.items() if k not in DATA_FIELDS})
    assignments = list(given("set") or [])
    if only_sections_present:
        sections = to_dict(config)
        assignments = [a for a in assignments if a.split("=", 1)[0].split(".", 1)[0] in sections]
    return apply_overrides(config, assignments) if assignments else config


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


# -- the commands ------------------------------------------------------------------------------

def train_one_run(args: argparse.Namespace, preset_config, flags, default_dir: Path, train) -> Path | None:
    """What ``finetune`` and ``pretrain`` share: the flags on the preset (on the saved
    configuration with --resume), the processes under torchrun, and the run; its folder on rank 0."""
    config = flags(preset_config)
    config = on_saved_config(config, args, args.out or default_dir, flags)
    with processes_of_this_run(config) as (config, processes):
        run_dir = train(config, run_dir=args.out, runs_dir=args.runs_dir, data_dir=args.data_dir, resume=args.resume,
                        progress=not args.no_progress, processes=processes)
        return run_dir if processes.is_main else None


def run_finetune(args: argparse.Namespace) -> None:
    from cmrssp.finetune import default_run_name, run_finetune as finetune
    from cmrssp.presets import finetune_preset

    def flags(config):
        return configure(config, args, init=args.init, freeze_encoder_epochs=args.freeze_encoder_epochs,
                         n_subjects=args.n_subjects, subset_seed=args.subset_seed)

    preset = finetune_preset(default_preset(args))
    run_dir = train_one_run(args, preset, flags, args.runs_dir / default_run_name(flags(preset)), finetune)
    if run_dir is not None:
        print(f"done: {run_dir}")


def run_pretrain(args: argparse.Namespace) -> None:
    from cmrssp.presets import pretrain_preset
    from cmrssp.pretrain import run_pretrain as pretrain
    from cmrssp.run_folder import pretrain_run_name

    flags = lambda config: configure(config, args, method=args.method)  # noqa: E731
    run_dir = train_one_run(args, pretrain_preset(default_preset(args), args.method), flags,
                            args.runs_dir / pretrain_run_name(args.method), pretrain)
    if run_dir is not None:
        print(f"done: {run_dir} (fine-tune from it with: cmrssp finetune --init {args.method})")


def run_evaluate(args: argparse.Namespace) -> None:
    from cmrssp.evaluate import EvaluateOptions, evaluate_pending, evaluate_run, run_evaluation
    from cmrssp.results import format_runs_table

    options = EvaluateOptions(split=args.on, checkpoint=args.checkpoint, export_nifti=args.export_nifti,
                              label_convention="source" if args.source_labels else "canonical",
                              largest_component=args.largest_component, data=str(args.data or ""),
                              batch_size=args.batch_size, device=args.device or "auto").validate()
    if args.run:
        for run in args.run:
            evaluate_run(run, options)
        evaluations = [run_evaluation(run, options) for run in args.run]
    else:
        evaluations = evaluate_pending(args.runs_dir, options)
    print(format_runs_table(evaluations))


def run_results(args: argparse.Namespace) -> None:
    from cmrssp.evaluate import EvaluateOptions
    from cmrssp.gather import gather, write_results

    runs_dirs = args.runs_dir or [Path("runs")]
    if args.out is None and len(runs_dirs) > 1:
        raise InputError(None, "--out is needed when gathering from several --runs-dir")
    out = args.out or runs_dirs[0]
    run_dirs, evaluations = gather(runs_dirs, EvaluateOptions(split=args.on, checkpoint=args.checkpoint).validate())
    written = write_results(run_dirs, evaluations, out)
    print(f"{len(evaluations)} evaluated runs from {len(runs_dirs)} runs folder(s); results: "
          + ", ".join(str(path) for path in written.values()))


def run_predict(args: argparse.Namespace) -> None:
    from cmrssp.predict import predict_inputs

    predict_inputs(args.run, args.input, args.out, checkpoint=args.checkpoint, dataset=args.dataset,
                   label_convention="source" if args.source_labels else "canonical",
                   batch_size=args.batch_size, device=args.device or "auto")


def run_study(args: argparse.Namespace) -> None:
    from cmrssp.evaluate import EvaluateOptions
    from cmrssp.presets import replace
    from cmrssp.protocols import get_protocol
    from cmrssp.study import check_set_sections, run_study as study

    protocol = get_protocol(args.protocol)
    preset = default_preset(args, cpu=protocol.preferred_cpu_preset)
    grid = replace(protocol.grid_for(preset), methods=args.methods, subsets=args.n_subjects, seeds=args.subset_seed)
    check_set_sections(args.set)
    cpu_runs = study_cpu_runs(args)
    devices = gpu_devices(args.gpus) if args.gpus else ()
    study(preset, grid, runs_dir=args.runs_dir, data_dir=args.data_dir,
          adjust=lambda config: configure(config, args, only_sections_present=True),
          evaluate=EvaluateOptions(device=args.device or (devices[0] if devices else "auto")), dry_run=args.dry_run,
          workers=args.workers, progress=not args.no_progress, devices=devices, protocol=protocol,
          cpu_runs=cpu_runs)


def study_cpu_runs(args: argparse.Namespace) -> int:
    """How many runs the study trains at once on the CPU: ``--cpu-runs``, refused where the runs
    train on GPUs; else 2 when they train on a CPU with 2 or more cores (``default_cpu_runs``)."""
    from cmrssp.scheduler import default_cpu_runs

    on_gpus = bool(args.gpus) or (args.device or "cpu") != "cpu"
    if args.cpu_runs is not None:
        if on_gpus:
            raise InputError(None, f"--cpu-runs {args.cpu_runs} trains on the CPU; it cannot go with "
                                   f"{'--gpus' if args.gpus else '--device ' + args.device}")
        return args.cpu_runs
    if on_gpus:
        return 1
    import torch

    return default_cpu_runs() if args.device == "cpu" or not torch.cuda.is_available() else 1


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
    from cmrssp.protocols import get_protocol
    from cmrssp.table import format_table

    protocol = get_protocol(args.protocol)
    config = finetune_preset(args.preset or protocol.preferred_cpu_preset)
    config = replace(config, data=protocol.apply(config.data))
    inits = ["" if init == "random" else init for init in args.inits.split(",") if init]
    if not inits or not args.subset_seed:
        raise InputError(None, "probe needs at least one init (--inits) and one subset seed (--subset-seed)")
    rows = []
    for seed in args.subset_seed:
        rows += probe(configure(config, args, n_subjects=args.n_subjects, subset_seed=seed), inits,
                      ProbeConfig(steps=args.steps), runs_dir=args.runs_dir, data_dir=args.data_dir,
                      features=args.features, protocol=protocol)
    print(format_table(rows))
    summary = summarize_probes(rows)
    if len(args.subset_seed) > 1:
        out = args.runs_dir / f"probe-n{args.n_subjects or 'all'}-summary.json"
        write_json(out, {"subset_seeds": list(args.subset_seed), "rows": summary})
        print(f"mean over subset seeds {','.join(map(str, args.subset_seed))} (written {out}):")
    print(format_table(summary))


def run_phantom(args: argparse.Namespace) -> None:
    from cmrssp.data.phantom import write_cohort
    from cmrssp.table import format_table

    rows = write_cohort(args.out, args.subjects, seed=args.cohort_seed, layout=args.layout, preset=args.scale, workers=args.workers)
    if args.report:
        print(format_table(rows))
    print(f"wrote {len(rows)} subjects to {args.out} (QA: {args.out / 'phantom_qa.csv'})")


def run_prepare(args: argparse.Namespace) -> None:
    import dataclasses

    from cmrssp.config import PREPARE_PRESETS, SyntheticCohortConfig
    from cmrssp.data.prepare import prepare_datasets
    from cmrssp.data.synthetic import prepare_synthetic

    grid = args.grid or ("paper" if args.dataset else "cpu")
    config = PREPARE_PRESETS[grid]
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
    if args.split is not None:
        split = read_split_file(args.split, available_keys=cache.keys)
    else:  # the rule finetune and study draw with, so the file holds the split they would use
        data = DataConfig(test_fraction=args.test, valid_fraction=args.valid_fraction, split_seed=args.split_seed,
                          stratify=args.stratify or "")
        split = study_split(data, cache)
    if args.n_subjects is not None:
        split = label_scarce_subset(split, args.n_subjects or "all", seed=args.subset_seed)
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
    try:
        args.handler(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from cmrssp.train import TrainingError  # imported here: `info` and --help need no torch

        if not isinstance(error, TrainingError):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to continue", file=sys.stderr)
        return 130
    return 0


def console_script() -> None:
    """The ``cmrssp`` console script (pyproject.toml [project.scripts])."""
    sys.exit(main())

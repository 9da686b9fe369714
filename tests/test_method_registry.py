"""The method registry: every method declared once; adding one is its module plus one registry line."""

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cmrssp.methods import METHODS, REGISTRY, all_methods, get_method
from cmrssp.presets import PretrainConfig, pretrain_preset

ROOT = Path(__file__).resolve().parents[1]


def test_registry_declarations_match_their_lines():
    assert METHODS == ("simclr", "pcl", "dino", "mim")
    for entry, method in zip(REGISTRY, all_methods()):
        assert method.name == entry.name and entry.help
        assert method.section in {f.name for f in dataclasses.fields(PretrainConfig)}
        assert isinstance(getattr(pretrain_preset("tiny", method.name), method.section), method.config_class)
        assert method.cpu_seconds_per_sample > 0
        optimizer, train = method.paper()
        assert train.epochs == 100  # the study pretrains every method for 100 epochs (protocol 2)
    assert get_method("pcl").section == get_method("simclr").section == "contrastive"


def test_a_new_method_needs_its_module_and_one_registry_line(tmp_path):
    """A toy method (MIM's Task under its own name and section) registered by one line trains
    through `pretrain`, is known to the presets and PretrainConfig, and `finetune --init` finds it."""
    (tmp_path / "toy_method.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        from cmrssp.methods.method import PretrainingMethod
        from cmrssp.methods.mim import MimConfig, MimTask, _paper_mim


        @dataclass(frozen=True)
        class ToyConfig:
            mask_ratio: float = 0.5


        def make_toy_task(config, train_slices, valid_slices, size, device, stack_sizes=None):
            return MimTask(config.unet.channels, config.unet.in_channels, MimConfig(mask_ratio=config.toy.mask_ratio),
                           config.augment, train_slices, valid_slices, size=size, device=device)


        TOY = PretrainingMethod("toy", "toy", ToyConfig, _paper_mim, make_toy_task, 1 / 60)
    '''))
    script = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import cmrssp.methods as methods
        methods.REGISTRY += (methods.Registered("toy", "toy_method:TOY", "a toy"),)  # the one line
        methods.METHODS = tuple(entry.name for entry in methods.REGISTRY)
        from cmrssp import cli
        code = cli.main(["pretrain", "--method", "toy", "--preset", "tiny", "--iterations", "2", "--set",
                         "toy.mask_ratio=0.25", "--runs-dir", {str(tmp_path / "runs")!r}, "--data-dir",
                         {str(tmp_path / "data")!r}, "--no-progress"])
        assert code == 0, code
        import json
        saved = json.loads(open({str(tmp_path / "runs" / "pretrain-toy" / "config.json")!r}).read())
        assert saved["toy"] == {{"mask_ratio": 0.25}}, saved
        code = cli.main(["finetune", "--init", "toy", "--preset", "tiny", "--iterations", "2", "--runs-dir",
                         {str(tmp_path / "runs")!r}, "--data-dir", {str(tmp_path / "data")!r}, "--no-progress"])
        assert code == 0, code
    ''')
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "runs" / "finetune-toy-nall-s0" / "complete.json").is_file()

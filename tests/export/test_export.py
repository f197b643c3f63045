"""mltrain-export and mltrain-sample (mltrain/export/): a tiny trained run leaves mltrain as a
transformers model whose validation loss, computed by transformers on the run's own validation
windows, is the run's logged ``val/loss``; a deliberately wrong mapping is caught.

Tolerances (fp32, unit roundoff u = 2^-24 ≈ 6e-8). The exported GPT-2 computes the same
function in another order: a block's ``(x + a) + m`` where mltrain computes ``x + 1·(a + m)``,
Conv1D's ``addmm`` for Linear's matmul, transformers' attention mask for SDPA's ``is_causal``.
Each such step rounds differently by at most a few u relative to the magnitudes involved
(|x| ≲ 10 here); through 4 blocks, ``ln_f`` and the head (a sum of d = 32 products) a logit
moves by at most a few hundred u·|logit| ≈ 1e-5 for |logits| ≲ 10 (measured: 2.4e-6), so
logits are compared at 1e-5 absolute. A loss is a mean of 4·32 per-token cross-entropies,
each off by at most the largest logit error (log-softmax is 1-Lipschitz in the max norm), so
|Δ loss| ≤ 1e-5 as well; the float64 sum of the chunks adds nothing measurable. A wrong
mapping is far outside: a wrong h, an untied head or a transposed matrix changes the loss by
0.01 to several nats (asserted below to be > 1e-3, i.e. 100 times the tolerance).
"""

from __future__ import annotations

import json

import pytest
import torch

from mltrain.export import cli as X
from mltrain.export import hf
from mltrain.export.check import hf_loss, own_loss, run_data, validation_windows
from mltrain.export.source import ExportError, open_run
from mltrain.metrics import read_metrics
from mltrain.model.transformer import BlockPath
from tests.helpers import run_job

LOGIT_TOL = 1e-5
LOSS_TOL = 1e-5

VCYCLE = [
    "coarsening=even_odd",
    "train.steps=10",
    "coarsening.vcycle.window=2",
    "coarsening.vcycle.coarse_steps=2",
    "train.eval_every=2",
]


@pytest.fixture(scope="module")
def vrun(tmp_path_factory):
    """A tiny V-cycle run (even_odd: coarse_a = blocks 1,3 and coarse_b = 0,2 with h = 2)."""
    d = tmp_path_factory.mktemp("vrun") / "run"
    run_job(d, *VCYCLE)
    return d


@pytest.fixture(scope="module")
def fine_export(vrun, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "fine"
    info = X.export(vrun, out)
    return out, info


def _logged_final(run_dir):
    recs = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("val/loss") is not None]
    return recs[-1]["step"], recs[-1]["val/loss"]


def _windows(run_dir, level=None):
    ex = open_run(run_dir, level=level)
    return ex, validation_windows(ex, run_data(ex))


def test_fine_export_is_gpt2_and_its_loss_is_the_logged_val_loss(vrun, fine_export):
    """Loaded offline by AutoModelForCausalLM/AutoTokenizer with no custom code: a
    GPT2LMHeadModel with exact GELU, tied head; transformers' loss on the run's validation
    windows equals the val/loss the run logged at the checkpoint's step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

    out, info = fine_export
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(model) is GPT2LMHeadModel and not (out / "modeling_mltrain_ode.py").exists()
    assert model.config.activation_function == "gelu" and model.config.n_layer == 4
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert tok.eos_token_id == model.config.eos_token_id
    step, logged = _logged_final(vrun)
    assert info["step"] == step and info["val_loss"]["logged"] == logged
    ex, windows = _windows(vrun)
    assert abs(hf_loss(model, windows, 4) - logged) <= LOSS_TOL
    ours, path = X.C.own_model(ex)
    x = windows[:4, :-1]
    with torch.no_grad():
        diff = (model(input_ids=x).logits - ours(x, path=path)[0]).abs().max()
    assert float(diff) <= LOGIT_TOL


def test_exported_tokenizer_gives_the_runs_ids(vrun, fine_export):
    from transformers import AutoTokenizer

    out, _ = fine_export
    ex = open_run(vrun)
    tok = run_data(ex).tokenizer
    theirs = AutoTokenizer.from_pretrained(out, local_files_only=True)
    text = tok.decode(run_data(ex).val[:2000])
    text = text.replace("<|endoftext|>", "\n")  # special in HF tokenizers (documented)
    assert theirs(text, add_special_tokens=False)["input_ids"] == tok.encode(text)


def test_gpt2_tokenizer_export_matches_tiktoken():
    """The gpt2 tokenizer (tiktoken) rebuilt as a fast tokenizer: same ids, full vocabulary."""
    from mltrain.data.tokenizers import load_gpt2
    from mltrain.export.tokenizer import hf_tokenizer

    tok = load_gpt2()
    theirs = hf_tokenizer(tok, 1024)
    assert len(theirs) == 50257 and theirs.eos_token_id == 50256
    text = "Hello world. The  State of the Union's 1,234 citizens — naïve café!\n\n  It's  ok"
    assert theirs(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert theirs("Hello world")["input_ids"] == [15496, 995]


def test_hf_tokenizer_export_round_trips(fine_export, tmp_path):
    """An ``hf:`` tokenizer (here the export's own directory) is saved as it is."""
    from transformers import AutoTokenizer

    from mltrain.data.tokenizers import load_hf
    from mltrain.export.tokenizer import hf_tokenizer

    out, _ = fine_export
    tok = load_hf(str(out))
    hf_tokenizer(tok, 32).save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again("Mr. Speaker, Mr. President")["input_ids"] == tok.encode(
        "Mr. Speaker, Mr. President"
    )


def test_coarse_level_export_with_remote_code(vrun, tmp_path):
    """coarse_a (blocks 1,3, h = 2) exported with the shipped remote code: its loss by
    transformers equals mltrain's own model along that path, computed here independently
    with BlockPath((1, 3), 2.0) on the run's fine tensors."""
    from transformers import AutoModelForCausalLM

    info = X.export(vrun, tmp_path / "a", level="coarse_a")
    assert info["blocks"] == [1, 3] and info["step_sizes"] == [2.0, 2.0]
    assert info["val_loss"]["logged"] is None  # a V-cycle logs the fine path's val/loss only
    mine = [r for r in read_metrics(vrun / "metrics.jsonl") if r["level"] == "coarse_a"]
    assert info["last_train_loss"] == {
        "step": mine[-1]["step"],
        "train/loss": mine[-1]["train/loss"],
    }
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "a", local_files_only=True, trust_remote_code=True
    ).eval()
    assert type(model).__name__ == "MLTrainODEForCausalLM" and model.config.n_layer == 2
    ex, windows = _windows(vrun)  # the fine model's tensors
    fine, _ = X.C.own_model(ex)
    path = BlockPath((1, 3), 2.0)
    ours = X.C.chunked_loss(lambda x, y: fine(x, y, path=path)[1], windows, 4)
    assert abs(hf_loss(model, windows, 4) - ours) <= LOSS_TOL
    assert abs(ours - own_loss(ex, windows)) > 10 * LOSS_TOL  # the coarse path is another model
    with pytest.raises(ValueError):  # no silent fallback to GPT-2 without the remote code
        AutoModelForCausalLM.from_pretrained(
            tmp_path / "a", local_files_only=True, trust_remote_code=False
        )


# ------------------------------------------------------------------ deliberately broken mappings
def _wrong_h(monkeypatch):
    """The coarse level exported as plain GPT-2 (h = 1 instead of 2)."""
    original = hf.hf_config

    def config(ex, eot):
        out = original(ex, eot)
        out.pop("step_sizes", None), out.pop("auto_map", None)
        return out

    monkeypatch.setattr(hf, "hf_config", config)


def _untied_head(monkeypatch):
    """An untied head that is not the embedding (here: the embedding's rows permuted)."""
    cfg, sd = hf.hf_config, hf.hf_state_dict
    monkeypatch.setattr(
        hf, "hf_config", lambda ex, eot: {**cfg(ex, eot), "tie_word_embeddings": False}
    )

    def state(ex):
        out = sd(ex)
        wte = out["transformer.wte.weight"]
        out["lm_head.weight"] = wte[
            torch.randperm(len(wte), generator=torch.Generator().manual_seed(0))
        ]
        return out

    monkeypatch.setattr(hf, "hf_state_dict", state)


def _conv1d_not_transposed(monkeypatch):
    """The square projections (d x d) kept in nn.Linear's (out, in) orientation: shapes fit,
    the function does not."""
    sd = hf.hf_state_dict

    def state(ex):
        out = sd(ex)
        for k in out:
            if k.endswith("attn.c_proj.weight"):
                out[k] = out[k].t().contiguous()
        return out

    monkeypatch.setattr(hf, "hf_state_dict", state)


@pytest.mark.parametrize(
    "level, breaking",
    [("coarse_a", _wrong_h), ("fine", _untied_head), ("fine", _conv1d_not_transposed)],
    ids=["wrong-h", "untied-head", "conv1d-orientation"],
)
def test_a_broken_mapping_fails_the_cross_check(vrun, tmp_path, monkeypatch, level, breaking):
    """Each break is caught: the broken model's logits are far (> 100 x the tolerance) from
    mltrain's, and the export refuses, writing nothing. (In this barely trained model the
    transposed projections move the loss by only ~2e-5, which is why the check compares
    logits as well as the loss.)"""
    from mltrain.export.check import logit_diff

    ex, windows = _windows(vrun, level)
    assert logit_diff(ex, hf.build_model(ex, 0), windows[:4])[0] <= LOGIT_TOL  # unbroken
    breaking(monkeypatch)
    broken = hf.build_model(ex, 0)
    assert logit_diff(ex, broken, windows[:4])[0] > 100 * LOGIT_TOL
    with pytest.raises(ExportError, match="the export is wrong; nothing written"):
        X.export(vrun, tmp_path / "new" / "out", level=level)
    assert list(tmp_path.iterdir()) == []  # not even the parent it would have made


# ------------------------------------------------------------------ sampling
def test_greedy_text_is_the_same_by_both_routes(vrun, fine_export, capsys):
    """mltrain-sample at temperature 0: the export (transformers' generate) and the run
    (mltrain's own model) give the same text; sampling is deterministic for a seed."""
    out, _ = fine_export
    args = ["--prompt", "The State of the Union", "--temperature", "0", "--max-new-tokens", "12"]
    X.sample_main([str(out), *args])
    by_hf = capsys.readouterr().out
    X.sample_main([str(vrun), *args])
    by_run = capsys.readouterr().out
    assert by_hf == by_run and by_hf.startswith("The State of the Union")
    hot = ["--prompt", "We", "--temperature", "1.5", "--top-k", "50", "--max-new-tokens", "12"]
    runs = []
    for seed in ("1", "1", "2"):
        X.sample_main([str(out), *hot, "--seed", seed])
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_greedy_tokens_of_a_coarse_level_agree(vrun, tmp_path):
    from mltrain.export import sample as S

    X.export(vrun, tmp_path / "b", level="coarse_b", check=False)
    model, _ = X.load_export(tmp_path / "b")
    ex = open_run(vrun, level="coarse_b")
    ours, path = X.C.own_model(ex)
    ids = [0, 5, 17, 300]
    assert S.generate_hf(model, ids, 20) == S.generate_own(ours, path, ids, 20, eot=0)


# ------------------------------------------------------------------ bad input
def _refused(argv, capsys, match):
    with pytest.raises(SystemExit) as e:
        X.export_main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("mltrain-export: error: ") and match in err, err


def test_bad_input_is_one_line_and_writes_nothing(vrun, tmp_path, capsys):
    empty = tmp_path / "norun"
    empty.mkdir()
    out = tmp_path / "out"
    _refused([str(empty), str(out)], capsys, "holds no checkpoint")
    _refused(
        [str(vrun), str(out), "--level", "coarse_z"], capsys, "levels are fine, coarse_a, coarse_b"
    )
    _refused([str(vrun), str(out), "--step", "3"], capsys, "has no checkpoint of that step")
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _refused([str(vrun), str(out)], capsys, "exists and is not empty; give --force")
    _refused([str(vrun), str(vrun.parent), "--force"], capsys, "holds a run")
    assert (out / "keep.txt").read_text() == "mine" and sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["norun", "out"]
    X.export_main([str(vrun), str(out), "--force", "--no-check"])
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert "exported fine (blocks 0,1,2,3; h=1)" in capsys.readouterr().out
    info = json.loads((out / X.INFO).read_text())
    assert "val_loss" not in info and info["level"] == "fine"


# ------------------------------------------------------------------ staged runs
@pytest.fixture(scope="module")
def grun(tmp_path_factory):
    """A tiny staged run: coarse_b (blocks 0,2, h = 2) then, after a growth, the fine path;
    a checkpoint after every iteration."""
    d = tmp_path_factory.mktemp("grun") / "run"
    run_job(
        d, "coarsening=grow", "train.steps=4", "train.eval_every=1",
        "train.checkpoint_every=1", "train.keep_checkpoints=100",
    )  # fmt: skip
    return d


def test_a_coarse_stage_exports_its_level_with_the_logged_val_loss(grun, tmp_path, capsys):
    """A checkpoint inside the coarse stage: the fine model is refused (its blocks are not
    trained there), the stage's level is exported and its loss by transformers is the
    val/loss the run logged at that step (validation measured the coarse path there)."""
    from mltrain.train.checkpoint import list_checkpoints

    steps = [int(p.stem[5:]) for p in list_checkpoints(grun / "checkpoints")]
    first = steps[0]
    _refused(
        [str(grun), str(tmp_path / "f"), "--step", str(first)], capsys, "export --level coarse_b"
    )
    info = X.export(grun, tmp_path / "b", step=first, level="coarse_b")
    logged = info["val_loss"]["logged"]
    rec = [
        r for r in read_metrics(grun / "metrics.jsonl") if r["step"] == first and "val/loss" in r
    ]
    assert logged == rec[0]["val/loss"]
    assert abs(info["val_loss"]["transformers"] - logged) <= LOSS_TOL
    last = X.export(grun, tmp_path / "fine")  # the newest checkpoint is in the fine stage
    assert abs(last["val_loss"]["transformers"] - last["val_loss"]["logged"]) <= LOSS_TOL


# ------------------------------------------------------------------ the documented commands
def test_console_scripts_are_registered():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["mltrain-export"] == "mltrain.export.cli:export_main"
    assert scripts["mltrain-sample"] == "mltrain.export.cli:sample_main"


def _documented(prefix: str) -> list[str]:
    """The ``prefix`` commands of docs/operations.md's "Export and sample" section."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text.split("## Export and sample", 1)[1].split("\n## ", 1)[0]
    return [ln.strip() for ln in section.splitlines() if ln.strip().startswith(prefix + " ")]


@pytest.mark.slow
def test_documented_commands_export_and_sample(vrun, tmp_path):
    """The export and sample commands of docs/operations.md, as printed, through the installed
    console scripts: the export loads, and both sampling routes print the same greedy text."""
    import shlex

    from tests.helpers import run_mltrain

    def run(line: str) -> str:
        line = line.split("  #", 1)[0]
        line = line.replace("outputs/runs/<run>", str(vrun)).replace("exports/<run>", "exp")
        # the tiny model's context is 32 tokens: 4 of the prompt + 40 new ones would not fit
        line = line.replace("--max-new-tokens 40", "--max-new-tokens 20")
        words = shlex.split(line)
        out = run_mltrain(words[1:], cwd=tmp_path, entry=words[0], env={"HF_HUB_OFFLINE": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    exports, samples = _documented("mltrain-export"), _documented("mltrain-sample")
    assert len(exports) == 3 and len(samples) == 2
    assert "exported fine" in run(exports[0]) and (tmp_path / "exp" / "config.json").is_file()
    texts = [run(s) for s in samples]
    assert texts[0] == texts[1] and texts[0].startswith("My fellow citizens")


def test_a_width_stage_exports_its_narrow_model(tmp_path_factory, tmp_path, capsys):
    """Width growth (narrow: all blocks at width d/2, h = 1, on its own tensors): inside its
    stage the narrow model is a GPT-2 of width 16 whose loss by transformers is the logged
    val/loss; the fine model is refused there."""
    from mltrain.train.checkpoint import list_checkpoints

    run = tmp_path_factory.mktemp("wrun") / "run"
    run_job(
        run, "coarsening=grow_width", "train.steps=4", "train.eval_every=1",
        "train.checkpoint_every=1", "train.keep_checkpoints=100",
    )  # fmt: skip
    first = int(list_checkpoints(run / "checkpoints")[0].stem[5:])
    _refused([str(run), str(tmp_path / "f"), "--step", str(first)], capsys, "width d/2")
    info = X.export(run, tmp_path / "n", step=first, level="narrow")
    assert info["architecture"] == "GPT2LMHeadModel" and info["step_sizes"] == [1.0] * 4
    assert json.loads((tmp_path / "n" / "config.json").read_text())["n_embd"] == 16
    v = info["val_loss"]
    assert v["logged"] is not None and abs(v["transformers"] - v["logged"]) <= LOSS_TOL


def test_the_validation_fingerprint_is_read_through_the_run_record(tmp_path):
    """The export reads run.json through mltrain.runrecord (its one reader): the recorded
    fingerprint, or None for a run without a record or with a torn one."""
    from mltrain.export.source import Exportable
    from mltrain.runrecord import RUN_FILE

    ex = Exportable(tmp_path, tmp_path / "ckpt.pt", 0, None, "fine", {}, 8, 2, (), (), "fine")
    assert ex.validation_fingerprint() is None  # no run.json
    (tmp_path / RUN_FILE).write_text(json.dumps({"validation": {"fingerprint": "ab12"}}))
    assert ex.validation_fingerprint() == "ab12"
    (tmp_path / RUN_FILE).write_text('{"validation": ')  # torn
    assert ex.validation_fingerprint() is None

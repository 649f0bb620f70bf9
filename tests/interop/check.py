"""Loads tfconv's converted folders with `transformers` and compares them with TensorFlow's outputs.

Usage: python check.py CASES_JSON

CASES_JSON lists cases: {"name", "folder", "class", "probes", "expected", "atol", "rtol",
"expect_failure"}. `probes` is a golden probes.json, `expected` the golden expected.safetensors
(TensorFlow's outputs, named as tfconv names them). Imports torch only, never TensorFlow: the
two bundle LLVM builds that clash in one process.

Prints one row per case and exits 1 if any case that should pass fails, or any case that should
fail passes.
"""

import json
import sys
import warnings

import torch
import transformers
from safetensors.torch import load_file


def tfconv_outputs(model, cls, probes):
    """The model's outputs under tfconv's names, in forward order."""
    shape = (probes["batch"], probes["seq_len"])
    inputs = {
        "input_ids": torch.tensor(probes["input_ids"]).reshape(shape),
        "attention_mask": torch.tensor(probes["attention_mask"]).reshape(shape),
        "token_type_ids": torch.tensor(probes["token_type_ids"]).reshape(shape),
    }
    out = {}
    with torch.no_grad():
        base = model.base_model(**inputs, output_hidden_states=True)
        out["embeddings"] = base.hidden_states[0]
        for i, h in enumerate(base.hidden_states[1:]):
            out[f"layer.{i}"] = h
        if getattr(base, "pooler_output", None) is not None:
            out["pooler"] = base.pooler_output
        full = model(**inputs)
        if cls == "BertForPreTraining":
            out["mlm_logits"] = full.prediction_logits
            out["nsp_logits"] = full.seq_relationship_logits
        elif cls == "BertForSequenceClassification":
            out["logits"] = full.logits
        elif cls == "BertForQuestionAnswering":
            out["start_logits"] = full.start_logits
            out["end_logits"] = full.end_logits
    return out


def check(case):
    """Returns (ok, detail) for one case."""
    cls = getattr(transformers, case["class"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, info = cls.from_pretrained(case["folder"], output_loading_info=True)
    model.eval()
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(key):
            problems.append(f"{key}: {info[key]}")
    for w in caught:
        text = str(w.message)
        if "weight" in text or "initialized" in text or "checkpoint" in text:
            problems.append(f"warning: {text[:200]}")
    with open(case["probes"]) as f:
        probes = json.load(f)
    expected = load_file(case["expected"])
    got = tfconv_outputs(model, case["class"], probes)
    worst = 0.0
    for name, ref in expected.items():
        if name not in got:
            problems.append(f"no output {name}")
            continue
        mine = got[name].float()
        if tuple(mine.shape) != tuple(ref.shape):
            problems.append(f"{name}: shape {tuple(mine.shape)} vs {tuple(ref.shape)}")
            continue
        scale = ref.abs().max().item()
        err = (mine - ref).abs().max().item()
        allowed = case["atol"] + case["rtol"] * scale
        worst = max(worst, err / scale if scale > 0 else err)
        if not err <= allowed:
            problems.append(f"{name}: max|d| {err:.3e} > allowed {allowed:.3e}")
    return not problems, f"worst rel {worst:.2e}" if not problems else "; ".join(problems)


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    version = transformers.__version__
    bad = 0
    print(f"{'case':<34} {'transformers':<13} {'class':<31} result")
    for case in cases:
        try:
            ok, detail = check(case)
        except Exception as e:  # a load failure is a failed case, reported like any other
            ok, detail = False, f"{type(e).__name__}: {e}"[:300]
        expected_ok = not case.get("expect_failure", False)
        verdict = ("PASS" if ok else "FAIL") if expected_ok else ("caught" if not ok else "NOT CAUGHT")
        if ok != expected_ok:
            bad += 1
        print(f"{case['name']:<34} {version:<13} {case['class']:<31} {verdict}: {detail}")
    print(f"{len(cases) - bad} passed, {bad} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

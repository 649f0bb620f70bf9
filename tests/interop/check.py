"""Loads tfconv's converted folders with `transformers` and compares them with TensorFlow's outputs.

Usage: python check.py CASES_JSON

CASES_JSON lists cases: {"name", "folder", "class", "probes", "expected", "atol", "rtol",
"expect_failure", "expect_divergence_at"}. `probes` is a golden probes.json, `expected` the golden
expected.safetensors (TensorFlow's outputs, named as tfconv names them). Imports torch only, never
TensorFlow: the two bundle LLVM builds that clash in one process.

`expect_failure` says why a deliberately broken case must fail: "numeric" (it loads cleanly and
its outputs fall outside tolerance, first at `expect_divergence_at` when given) or "load"
(transformers reports unused or newly initialized weights in its log). Failing for any other
reason does not count as caught.

Prints one row per case and exits 1 if any case that should pass fails, or any case that should
fail passes or fails for another reason.
"""

import json
import logging
import re
import sys
import warnings

import torch
import transformers
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

# What transformers logs when the folder and the model built from its config.json disagree:
# 4.x "Some weights of ... were not used when initializing ..." / "... were not initialized from
# the model checkpoint ... and are newly initialized"; 5.x a "LOAD REPORT" table of UNEXPECTED,
# MISSING, MISMATCH and CONVERSION keys.
LOAD_PHRASES = ("were not used when initializing", "were not initialized", "newly initialized", "LOAD REPORT",
                "UNEXPECTED", "MISSING", "MISMATCH", "CONVERSION")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Captured(logging.Handler):
    """Keeps every record transformers logs while attached."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def load_problems(records):
    """The captured log lines that report weights not loaded as stored, shortened for a table."""
    problems = []
    for r in records:
        text = ANSI.sub("", r.getMessage())
        flagged = any(p in text for p in LOAD_PHRASES)
        # Any other warning about weights is suspect too, as for Python warnings below.
        flagged |= r.levelno >= logging.WARNING and any(w in text for w in ("weight", "initialized", "checkpoint"))
        if flagged:
            problems.append(f"log {r.levelname}: {' '.join(text.split())[:300]}")
    return problems


def load(case):
    """from_pretrained with transformers' log captured: (model, load problems)."""
    cls = getattr(transformers, case["class"])
    root = hf_logging.get_logger()  # the library root, "transformers": every module's logger propagates to it
    handler = Captured()
    verbosity = hf_logging.get_verbosity()
    # 4.x logs unused weights at INFO when the class is not the config's architecture, so listen
    # from INFO; the default stderr handler is off meanwhile, the table shows what matters.
    hf_logging.set_verbosity_info()
    hf_logging.disable_default_handler()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = cls.from_pretrained(case["folder"], output_loading_info=True)
    finally:
        root.removeHandler(handler)
        hf_logging.enable_default_handler()
        hf_logging.set_verbosity(verbosity)
    logged = load_problems(handler.records)
    problems = logged + [f"{key}: {sorted(info[key])}"[:300] for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
                         if info.get(key)]
    for w in caught:
        text = str(w.message)
        if "weight" in text or "initialized" in text or "checkpoint" in text:
            problems.append(f"warning: {text[:200]}")
    return model, problems, bool(logged)


DTYPES = {"int64": torch.int64, "float32": torch.float32}


def probe_inputs(probes):
    """A golden probes.json ({"seed", "inputs": [{"name", "dtype", "shape", "data"}, ...]}) as torch
    tensors by name. tfconv names probe inputs as the HF model's forward arguments (BERT:
    input_ids, token_type_ids, attention_mask), so they are passed as keywords unchanged."""
    return {t["name"]: torch.tensor(t["data"], dtype=DTYPES[t["dtype"]]).reshape(t["shape"]) for t in probes["inputs"]}


def tfconv_outputs(model, case, probes, layers):
    """The model's outputs under tfconv's names, in forward order. `case["outputs"]` maps tfconv's
    head outputs to the attributes of the class's ModelOutput. `layers` is how many "layer.{i}"
    outputs tfconv has: transformers 5 records ALBERT's hidden states per inner layer, so when it
    reports a multiple of that, every k-th one ends a tfconv layer. `case["hidden_states"]`, when
    given, names the hidden states one by one instead (GPT-2's last one is ln_f's output)."""
    inputs = probe_inputs(probes)
    out = {}
    with torch.no_grad():
        base = model.base_model(**inputs, output_hidden_states=True)
        hidden = base.hidden_states
        if "hidden_states" in case:
            names = case["hidden_states"]
            if len(names) != len(hidden):
                raise ValueError(f"transformers returned {len(hidden)} hidden states, the case names {len(names)}")
            out.update(zip(names, hidden))
        else:
            out["embeddings"] = hidden[0]
            step = (len(hidden) - 1) // layers if layers and (len(hidden) - 1) % layers == 0 else 1
            for i, h in enumerate(hidden[step::step]):
                out[f"layer.{i}"] = h
        if getattr(base, "pooler_output", None) is not None:
            out["pooler"] = base.pooler_output
        full = model(**inputs)
        for ours, theirs in case["outputs"].items():
            out[ours] = getattr(full, theirs)
    return out


def check(case):
    """What is wrong with one case, by kind: {"load", "logged", "other", "numeric", "first", "worst"}.
    `numeric` lists outputs outside tolerance, `first` the first of them in forward order;
    `other` outputs missing or misshapen; `logged` whether transformers' log reported weights."""
    model, load_issues, logged = load(case)
    model.eval()
    with open(case["probes"]) as f:
        probes = json.load(f)
    expected = load_file(case["expected"])
    layers = sum(1 for name in expected if name.startswith("layer."))
    got = tfconv_outputs(model, case, probes, layers)
    result = {"load": load_issues, "logged": logged, "other": [], "numeric": [], "first": None, "worst": 0.0}
    # Outputs transformers does not expose (GPT-2's last block before ln_f) are not asked for;
    # a case that names its hidden states says which ones it does expose.
    exposed = set(case["hidden_states"]) | set(case["outputs"]) if "hidden_states" in case else set(expected)
    result["other"] += [f"no output {name}" for name in expected if name in exposed and name not in got]
    result["other"] += [f"unexpected output {name}" for name in got if name not in expected]
    for name, mine in got.items():  # forward order
        if name not in expected:
            continue
        ref, mine = expected[name], mine.float()
        if tuple(mine.shape) != tuple(ref.shape):
            result["other"].append(f"{name}: shape {tuple(mine.shape)} vs {tuple(ref.shape)}")
            continue
        scale = ref.abs().max().item()
        err = (mine - ref).abs().max().item()
        allowed = case["atol"] + case["rtol"] * scale
        result["worst"] = max(result["worst"], err / scale if scale > 0 else err)
        if not err <= allowed:  # also true for NaN
            result["numeric"].append(f"{name}: max|d| {err:.3e} > allowed {allowed:.3e}")
            result["first"] = result["first"] or name
    return result


def verdict(case, result):
    """(counts as expected, label, detail) for one case's result, or for its exception."""
    want = case.get("expect_failure")
    if isinstance(result, Exception):
        detail = f"{type(result).__name__}: {result}"[:300]
        return False, "FAIL" if not want else "WRONG FAILURE (exception)", detail
    problems = result["load"] + result["other"] + result["numeric"]
    detail = "; ".join(problems) if problems else f"worst rel {result['worst']:.2e}"
    if not want:
        return not problems, "PASS" if not problems else "FAIL", detail
    if not problems:
        return False, "NOT CAUGHT", detail
    if want == "numeric":
        at = case.get("expect_divergence_at")
        if result["load"] or result["other"]:
            return False, "WRONG FAILURE (not numeric)", detail
        if at and result["first"] != at:
            return False, f"WRONG FAILURE (first divergence {result['first']}, expected {at})", detail
        return True, "caught", detail
    if want == "load":
        # The log is what this case proves is read: info dicts alone do not count.
        return result["logged"], "caught" if result["logged"] else "WRONG FAILURE (nothing logged)", detail
    raise ValueError(f"unknown expect_failure {want!r}")


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    version = transformers.__version__
    hf_logging.disable_progress_bar()
    bad = 0
    print(f"{'case':<38} {'transformers':<13} {'class':<31} result")
    for case in cases:
        try:
            result = check(case)
        except Exception as e:  # a load failure is a failed case, reported like any other
            result = e
        ok, label, detail = verdict(case, result)
        if not ok:
            bad += 1
        print(f"{case['name']:<38} {version:<13} {case['class']:<31} {label}: {detail}")
    print(f"{len(cases) - bad} passed, {bad} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

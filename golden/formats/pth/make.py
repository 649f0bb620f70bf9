"""Writes the torch.save fixtures in this folder, read by the tests of src/source/pth.rs and
tests/reader_formats_cli.rs:

    xlm-zip.pth         an XLM-shaped checkpoint, torch.save's zip format (torch >= 1.6)
    xlm-legacy.pth      the same object, legacy format (_use_new_zipfile_serialization=False),
                        the container of the 2019 XLM releases
    state-dict.pth      a bare state dict with DataParallel's `module.` prefix (zip)

The XLM object follows facebookresearch/XLM's Trainer.save_checkpoint: a `model` state dict,
`model_optimizer`, `dico_id2word`/`dico_word2id`/`dico_counts`, `params` (a plain dict holding
a torch tensor and a numpy array, as XLM's does), `epoch`, ... The state dict holds views that
share one storage (a transpose, a row, a strided column), every dtype the reader maps, a scalar
and an empty tensor. Every value is fixed (aranges and constants), so the tests compute what
they expect instead of comparing dumps. The bytes are not reproducible run to run: the legacy
format keys storages by memory address and the zip format records a serialization id.

Run with the interop torch (torch 2.15, numpy 2.x):
    ~/.cache/tfconv/interop/torch/bin/python golden/formats/pth/make.py
"""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch


def model_state():
    emb = torch.arange(15, dtype=torch.float32).reshape(5, 3) / 4 - 1
    pos = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 8
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) - 5.5
    half = torch.arange(4, dtype=torch.float32) / 2 - 1
    sd = OrderedDict(
        [
            ("position_embeddings.weight", pos),
            ("embeddings.weight", emb),
            ("attentions.0.q_lin.weight", base),
            ("attentions.0.k_lin.weight", base.t()),  # non-contiguous view of base's storage
            ("attentions.0.q_lin.bias", base[1]),  # contiguous view at storage offset 4
            ("pred_layer.proj.bias", emb[:, 1]),  # strided view of emb: offset 1, stride 3
            ("dtypes.float64", torch.arange(3, dtype=torch.float64) / 4),
            ("dtypes.float16", half.half()),
            ("dtypes.bfloat16", half.bfloat16()),
            ("dtypes.int64", torch.arange(-2, 2, dtype=torch.int64) * 10**12),
            ("dtypes.int32", torch.arange(-2, 2, dtype=torch.int32) * 100000),
            ("dtypes.int16", torch.arange(-2, 2, dtype=torch.int16) * 1000),
            ("dtypes.uint8", torch.arange(250, 254, dtype=torch.uint8)),
            ("dtypes.int8", torch.arange(-4, 0, dtype=torch.int8)),
            ("dtypes.bool", torch.tensor([True, False, True])),
            ("scalar", torch.tensor(2.5)),
            ("empty", torch.zeros(0, 3)),
        ]
    )
    # As nn.Module.state_dict() does; pickled through BUILD.
    sd._metadata = OrderedDict([("", {"version": 1})])
    return sd


def xlm_object():
    id2word = {0: "<s>", 1: "</s>", 2: "<pad>", 3: "<unk>", 4: "hello@@", 5: "world"}
    params = {
        "emb_dim": 3,
        "n_layers": 1,
        "n_heads": 1,
        "dropout": 0.1,
        "gelu_activation": True,
        "sinusoidal_embeddings": False,
        "n_langs": 2,
        "lang2id": {"en": 0, "fr": 1},
        "id2lang": {0: "en", 1: "fr"},
        "langs": ["en", "fr"],
        "mt_steps": [("en", "fr")],
        "n_words": 6,
        "eos_index": 1,
        "pad_index": 2,
        "word_mask_keep_rand": "0.8,0.1,0.1",
        "stopping_criterion": None,
        "tokens_per_batch": 2**40,
        "big": 2**70 + 1,
        "neg_big": -(2**70),
        "clip_grad_norm": float("inf"),
        "exp_name": "héllo ✓",
        "pred_probs": torch.FloatTensor([0.8, 0.1, 0.1]),
        "mask_scores": np.maximum(np.arange(6, dtype=np.float64), 1) ** -0.5,
    }
    return {
        "epoch": 7,
        "n_total_iter": 1234,
        "best_metrics": {"valid_en_mlm_ppl": 12.5},
        "best_stopping_criterion": -1e12,
        "model": model_state(),
        "model_optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(5, 3)}},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.98), "params": [0]}],
        },
        "dico_id2word": id2word,
        "dico_word2id": {w: i for i, w in id2word.items()},
        "dico_counts": {"hello@@": 7, "world": 3},
        "params": params,
    }


def main():
    here = Path(__file__).resolve().parent
    torch.save(xlm_object(), here / "xlm-zip.pth")
    torch.save(xlm_object(), here / "xlm-legacy.pth", _use_new_zipfile_serialization=False)
    emb = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.save(
        OrderedDict([("module.embeddings.weight", emb), ("module.pred_layer.proj.bias", emb[:, 2])]),
        here / "state-dict.pth",
    )
    # Check that torch reads back what the tests expect.
    for name in ["xlm-zip.pth", "xlm-legacy.pth"]:
        back = torch.load(here / name, weights_only=False)
        for k, v in model_state().items():
            assert torch.equal(back["model"][k], v), (name, k)
    print("wrote", ", ".join(sorted(p.name for p in here.glob("*.pth"))))


if __name__ == "__main__":
    main()

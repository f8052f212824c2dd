"""Loading a published scGPT checkpoint folder into :class:`~sthinge.models.scgpt.ScGPT`.

An scGPT checkpoint folder (e.g. the whole-human model of bowang-lab/scGPT) holds ``args.json`` (the training
arguments, among them the shape), ``vocab.json`` (token -> id, special tokens included) and ``best_model.pt`` (a
bare state dict). References to scGPT's code are to bowang-lab/scGPT at commit ``cebd6fae`` unless a commit is
named (``4068d67c``: the pre-training code of August 2023 that wrote the published checkpoints).

Attention weights come in one of three layouts, all converted to PyTorch's ``self_attn.in_proj_*``:

* ``self_attn.Wqkv.{weight,bias}`` + ``self_attn.out_proj.*``: flash-attn 1.x ``FlashMHA`` and scGPT's pre-training
  layer ``FlashscGPTMHA`` (the published checkpoints; scGPT's ``Tutorial_Perturbation.ipynb`` prints
  ``transformer_encoder.layers.0.self_attn.Wqkv.weight`` of shape [1536, 512] for the whole-human model);
* ``self_attn._impl.Wqkv.*`` + ``self_attn._impl.out_proj.*``: scGPT's current flash-attn compatibility wrapper
  (``scgpt/model/flash_attn_compat.py`` L159-181, L402-404, L479-490);
* ``self_attn.in_proj_weight``/``in_proj_bias`` + ``self_attn.out_proj.*``: PyTorch's ``nn.MultiheadAttention``.

``Wqkv`` is a plain copy of ``in_proj``: flash-attn splits its output as ``"b s (three h d) -> b s three h d"``
(flash-attn v1.0.4 ``flash_attn/flash_attention.py`` L97-98; scGPT ``flash_attn_compat.py`` L419-420 and
``flash_layers.py`` at ``4068d67c``), i.e. rows [q; k; v], each head-major, which is exactly how PyTorch's
``in_proj_weight`` is split (``torch.nn.functional._in_projection_packed``: ``unflatten(-1, (3, E))``, then heads
by ``view(L, B * H, head_dim)``). scGPT's own ``load_pretrained`` renames ``Wqkv.`` to ``in_proj_`` without any
reordering (``scgpt/utils/util.py`` L333-342). Both use the softmax scale 1/sqrt(head_dim).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sthinge._logging import logg
from sthinge._state_dict import compare_state_dict, listing
from sthinge.io._torch import safe_torch_load

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sthinge.models.scgpt import ScGPT

__all__ = ["load_scgpt", "save_scgpt"]

ARGS_FILE = "args.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "best_model.pt"

#: Heads outside the per-token expression path, dropped by name (and logged). None of them changes
#: ``decoder(transformer_output)["pred"]``.
IGNORED_PREFIXES: tuple[str, ...] = (
    "cls_decoder.",  # cell-type classifier on the cell embedding (model.py L134; ``4068d67c`` L146-150)
    "mvc_decoder.",  # masked value prediction from the cell embedding, MVC (model.py L135-141)
    "grad_reverse_discriminator.",  # adversarial batch discriminator, DAB (model.py L143-148)
    "flag_encoder.",  # embeds the flag of the generated genes only (``4068d67c`` model.py L79, L231-235)
    "batch_encoder.",  # batch-label embedding, only concatenated to the decoder input (model.py L95-96, L341-354)
    "decoder.zero_logit.",  # explicit zero probability, beside the prediction (model.py L859-866, L870-876)
)

#: Modules that act on the input embeddings: a checkpoint with them computes something this backbone does not.
REFUSED_PREFIXES: dict[str, str] = {
    "dsbn.": "domain-specific batch norm of the input embeddings (model.py L98-103, L179-183)",
    "bn.": "batch norm of the input embeddings (model.py L104-106, L184-185)",
    "pert_encoder.": "perturbation flags added to the input embeddings (generation_model.py L80, L137-138)",
}

_ATTN_RENAMES: tuple[tuple[str, str], ...] = (
    (".self_attn._impl.Wqkv.weight", ".self_attn.in_proj_weight"),
    (".self_attn._impl.Wqkv.bias", ".self_attn.in_proj_bias"),
    (".self_attn._impl.out_proj.", ".self_attn.out_proj."),
    (".self_attn.Wqkv.weight", ".self_attn.in_proj_weight"),
    (".self_attn.Wqkv.bias", ".self_attn.in_proj_bias"),
)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(path)!r} is not UTF-8 text: {err}") from None


def _read_vocab(path: Path) -> dict[str, int]:
    vocab = _read_json(path)
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"{str(path)!r} must hold a non-empty JSON object of token -> id.")
    bad = [k for k, v in vocab.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise ValueError(f"{str(path)!r}: the ids of tokens {listing(bad)} are not non-negative integers.")
    # scGPT's GeneVocab requires consecutive ids (scgpt/tokenizer/gene_tokenizer.py L149-151)
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(
            f"{str(path)!r}: the token ids must be 0..{len(vocab) - 1}, each once (got ids up to "
            f"{max(vocab.values())}, {len(set(vocab.values()))} distinct)."
        )
    return dict(vocab)


def _convert_attention(state: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Rename flash-attn attention keys to PyTorch's; return the new dict and {new name: file name}."""
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    clashes = []
    for key, value in state.items():
        new = key
        for old, repl in _ATTN_RENAMES:
            if old in key:
                new = key.replace(old, repl)
                break
        if new in out:
            clashes.append(f"{origin[new]} and {key}")
            continue
        out[new] = value
        origin[new] = key
    if clashes:
        raise ValueError(f"{source} holds the same attention tensor in two layouts: " + "; ".join(clashes[:5]) + ".")
    return out, origin


def load_scgpt(
    folder: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[ScGPT, dict[str, int]]:
    """Load an scGPT checkpoint folder (e.g. the published whole-human model) into a
    :class:`~sthinge.models.scgpt.ScGPT` module.

    Parameters
    ----------
    folder
        A folder holding ``args.json``, ``vocab.json`` and ``best_model.pt``. The shape comes from ``args.json``
        (``embsize``, ``nheads``, ``d_hid``, ``nlayers``, ``dropout``; see
        :meth:`~sthinge.models.scgpt.ScGPTConfig.from_args_json`), the vocabulary size and the padding id from
        ``vocab.json`` and ``args.json``'s ``pad_token`` (default ``"<pad>"``). ``best_model.pt`` is read with
        ``weights_only=True``; attention in flash-attn's ``Wqkv`` layout is converted (see the module docstring).
    device
        Where to put the module; default the CPU.
    dtype
        Parameter dtype; default ``torch.float32`` (half-precision files are cast).

    Returns
    -------
    model
        The module, in eval mode (parameters keep ``requires_grad=True``; freeze them as needed).
    vocab
        The vocabulary, token -> id, as in ``vocab.json``.

    Raises
    ------
    FileNotFoundError
        If the folder or one of its three files does not exist (the message names them).
    ValueError
        If ``args.json`` is invalid (naming the field), if ``vocab.json`` is not a token -> consecutive-id map,
        if ``best_model.pt`` is not a state dict; or, in one message, if keys are missing, unexpected or
        mis-shaped. Tensors of heads HINGE does not use (``cls_decoder``, ``mvc_decoder``,
        ``grad_reverse_discriminator``, ``flag_encoder``, ``batch_encoder``, ``decoder.zero_logit``) are dropped
        by name and logged at INFO; tensors of modules that change the input embeddings (``dsbn``, ``bn``,
        ``pert_encoder``) are refused.
    """
    import torch

    from sthinge.models.scgpt import ScGPT, ScGPTConfig

    if dtype is None:
        dtype = torch.float32
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"`dtype` must be a floating-point torch.dtype, got {dtype!r}.")
    folder = Path(os.fspath(folder))
    if not folder.exists():
        raise FileNotFoundError(f"scGPT checkpoint folder {str(folder)!r} does not exist.")
    if not folder.is_dir():
        raise NotADirectoryError(
            f"{str(folder)!r} is a file; pass the scGPT checkpoint folder holding {ARGS_FILE}, {VOCAB_FILE} and "
            f"{WEIGHTS_FILE}."
        )
    absent = [name for name in (ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if absent:
        raise FileNotFoundError(f"scGPT checkpoint folder {str(folder)!r} lacks {', '.join(absent)}.")

    args = _read_json(folder / ARGS_FILE)
    if not isinstance(args, dict):
        raise ValueError(f"{str(folder / ARGS_FILE)!r} must hold a JSON object, got {type(args).__name__}.")
    vocab = _read_vocab(folder / VOCAB_FILE)
    pad_token = args.get("pad_token", "<pad>")
    if not isinstance(pad_token, str) or pad_token not in vocab:
        raise ValueError(
            f"{str(folder / ARGS_FILE)!r}: field 'pad_token' ({pad_token!r}) is not a token of {VOCAB_FILE}."
        )
    try:
        config = ScGPTConfig.from_args_json(args, len(vocab), pad_token_id=vocab[pad_token], name=folder.name)
    except ValueError as err:
        raise ValueError(f"{str(folder / ARGS_FILE)!r}: {err}.") from None

    weights = folder / WEIGHTS_FILE
    source = repr(str(weights))
    state = safe_torch_load(weights, map_location="cpu")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source} is not a state dict (a mapping of names to tensors).")
    refused = Counter(p for k in state for p in REFUSED_PREFIXES if k.startswith(p))
    if refused:
        what = "; ".join(f"{p.rstrip('.')} ({n} tensors): {REFUSED_PREFIXES[p]}" for p, n in refused.items())
        raise ValueError(f"{source} has modules that this scGPT backbone does not implement: {what}.")
    state, origin = _convert_attention(state, source)

    ignored = Counter(p for k in state for p in IGNORED_PREFIXES if k.startswith(p))
    if ignored:
        heads = ", ".join(f"{p.rstrip('.')} ({n})" for p, n in ignored.items())
        logg.info(f"load_scgpt: ignoring {sum(ignored.values())} tensor(s) of heads sthinge does not use: {heads}.")

    with torch.device("meta"):  # no allocation or random init: every weight comes from the file
        model = ScGPT(config)
    expected = model.state_dict()
    report = compare_state_dict(expected, state, ignore=IGNORED_PREFIXES)
    unexpected = [origin[k] for k in report.unexpected]
    wrong = []
    for k, v in expected.items():
        if k in state and tuple(state[k].shape) != tuple(v.shape):
            name = k if origin[k] == k else f"{origin[k]} (as {k})"
            wrong.append(f"{name} {list(state[k].shape)} (file) vs {list(v.shape)} (model)")
    problems = []
    if report.missing:
        problems.append(f"missing keys {listing(report.missing)}")
    if unexpected:
        problems.append(f"unexpected keys {listing(unexpected)}")
    if wrong:
        shown = "; ".join(wrong[:5]) + ("; ..." if len(wrong) > 5 else "")
        problems.append(f"{len(wrong)} tensor(s) have the wrong shape: {shown}")
    if problems:
        raise ValueError(
            f"{source} does not fit the scGPT backbone of {ARGS_FILE} ({config.n_layers} layers, width "
            f"{config.d_model}, feed-forward {config.d_hid}, {config.vocab_size} tokens in {VOCAB_FILE}): "
            + "; ".join(problems)
            + "."
        )

    tensors = {k: state[k].to(dtype=dtype) for k in expected}
    model.load_state_dict(tensors, strict=True, assign=True)
    if device is not None:
        model = model.to(device)
    model.vocab = dict(vocab)
    return model.eval(), vocab


def save_scgpt(model: ScGPT, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write an :class:`~sthinge.models.scgpt.ScGPT` as a published scGPT checkpoint folder.

    The folder gets ``args.json`` (``embsize``, ``nheads``, ``d_hid``, ``nlayers``, ``dropout``, ``pad_token``,
    ``input_emb_style="continuous"``, ``pre_norm=false``), ``vocab.json`` (the module's :attr:`~ScGPT.vocab`) and
    ``best_model.pt`` (the state dict, attention in flash-attn's ``Wqkv`` layout as the released checkpoints have
    it), so :func:`load_scgpt` and scGPT's own loader read it. The folder is written next to its destination and
    renamed into place: a crash never leaves a half-written checkpoint.

    Parameters
    ----------
    model
        The backbone; it must have a vocabulary (``model.vocab``) holding ``<pad>``.
    folder
        Destination folder.
    overwrite
        Replace an existing folder at ``folder``; without it, that is a ``FileExistsError``.

    Returns
    -------
    The folder written.
    """
    import shutil
    import tempfile

    import torch

    from sthinge.models.scgpt import PAD_TOKEN

    folder = Path(os.fspath(folder))
    vocab = model.vocab
    if not isinstance(vocab, Mapping) or PAD_TOKEN not in vocab:
        raise ValueError(f"`model` needs a vocabulary with {PAD_TOKEN!r} (`model.vocab`) to be saved as scGPT.")
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"`model.vocab` has {len(vocab)} tokens, the model {model.config.vocab_size}.")
    if folder.exists() and not overwrite:
        raise FileExistsError(f"`folder` {str(folder)!r} exists; pass `overwrite=True` to replace it.")
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"`folder` {str(folder)!r} is a file, not a checkpoint folder; it is never replaced.")
    c = model.config
    args = {
        "embsize": c.d_model,
        "nheads": c.n_heads,
        "d_hid": c.d_hid,
        "nlayers": c.n_layers,
        "dropout": c.dropout,
        "pad_token": PAD_TOKEN,
        "input_emb_style": "continuous",
        "pre_norm": False,
    }
    state = {}
    for k, v in model.state_dict().items():
        for ours, published in (
            (".self_attn.in_proj_weight", ".self_attn.Wqkv.weight"),
            (".self_attn.in_proj_bias", ".self_attn.Wqkv.bias"),
        ):
            k = k.replace(ours, published)
        state[k] = v.detach().cpu().clone()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (tmp / ARGS_FILE).write_text(json.dumps(args, indent=1))
        (tmp / VOCAB_FILE).write_text(json.dumps(dict(vocab)))
        torch.save(state, tmp / WEIGHTS_FILE)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder

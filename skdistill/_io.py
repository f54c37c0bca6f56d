"""Save and load the compressed representation of a dataset: one self-contained file.

A fitted :class:`~skdistill.DatasetDistiller` is the compressed representation of its
training set (Wang et al. 2018): the architecture, the distribution p(θ0) of initial
weights, the learned step sizes and the synthetic samples with their labels. ``save`` writes
them, with the classes, the constructor parameters and the fit's curves, to one file;
``load`` restores an estimator whose ``score``, ``evaluate`` and ``train_model`` give the
same numbers.

File format, version 1: a zip archive (``unzip -l`` lists it) with

``manifest.json``
    the format name and version, the versions of skdistill, torch and numpy that wrote it,
    the architecture (a built-in name with its parameters and sizes, or a class by import
    path with its parameters, or a pickled instance), the constructor parameters, the
    classes, the fit's scalars (among them the starting step size, ``inner_lr_init_``),
    the dtype of every array and the SHA-256 of every other member; plain JSON, readable
    without skdistill.
``arrays.pt``
    the tensors (synthetic samples, label indices, soft labels where learned, step sizes,
    the θ0 states of p(θ0) where it is a fixed or pretrained list, the template weights that
    p(θ0) does not redraw, the curves), a ``torch.save`` dict read with
    ``torch.load(weights_only=True)``, which unpickles tensors and containers only.
``module.pt`` (only when the architecture cannot be rebuilt from JSON)
    the pickled module: its class is a user's ``nn.Module`` passed as an instance, or one
    whose import path or parameters are not plain data. Reading it needs
    ``weights_only=False``, i.e. runs the pickle's code: load such files only from a source
    you trust. Every other file loads without unpickling arbitrary objects.

Float64 arrays holding float32 values exactly (the synthetic samples of a float32 fit,
learned step sizes, the curves) are stored as float32 and restored to float64 bit for bit.
The Adam moments and the random stream of the fit are not saved: a warm start after
``load`` continues from the saved synthetic set and step sizes with fresh optimiser moments.
"""

import copy
import datetime
import hashlib
import importlib
import inspect
import io
import json
import math
import os
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .nets import default_module_params

__all__ = ["save_distiller", "load_distiller", "read_manifest", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "skdistill.DatasetDistiller"
FORMAT_VERSION = 1

_MANIFEST = "manifest.json"
_ARRAYS = "arrays.pt"
_MODULE = "module.pt"
_BUILTIN_MODULES = ("mlp", "lenet", "convnet")


# ---------------------------------------------------------------------- public functions


def save_distiller(distiller, path, *, metadata=None):
    """Write a fitted distiller to ``path`` (one file; see the module docstring).

    The file is written next to ``path`` under a temporary name and then renamed, so an
    interrupted save never leaves a truncated file under ``path``.

    Parameters
    ----------
    distiller : fitted DatasetDistiller
    path : str or path-like
    metadata : dict, default=None
        Extra JSON data kept in the manifest (the command line records the dataset here).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        When a part of the estimator cannot be stored: classes other than numbers, strings
        or booleans, or a module class that can be neither imported back nor pickled.
    """
    path = Path(path)
    if not hasattr(distiller, "distilled_X_"):
        raise ValueError("the distiller is not fitted; call fit before save.")
    arrays, dtypes = {}, {}
    classes = np.asarray(distiller.classes_)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "written_by": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "estimator": type(distiller).__name__,
        "classes": _encode_classes(classes),
    }
    architecture, module_payload = _describe_architecture(distiller, len(classes))
    manifest["architecture"] = architecture
    manifest["params"], dropped = _encode_params(distiller, classes, arrays, dtypes)
    manifest["dropped_params"] = dropped

    # The compressed representation: with multi-formation the stored images, which decode
    # to distilled_X_ (f² times as many rows).
    factor = distiller.get_params().get("multi_formation", 1)
    if factor > 1:
        _put(arrays, dtypes, "stored_X", distiller.stored_X_)
    else:
        _put(arrays, dtypes, "distilled_X", distiller.distilled_X_)
    y_index = _class_index(classes, distiller.distilled_y_)
    arrays["distilled_y"] = torch.as_tensor(y_index, dtype=torch.int64)
    proba = np.asarray(distiller.distilled_y_proba_)
    if np.array_equal(proba, np.eye(len(classes))[y_index]) and proba.dtype == np.float64:
        manifest["hard_labels"] = True  # one-hot: implied by distilled_y
    else:
        manifest["hard_labels"] = False
        _put(arrays, dtypes, "distilled_y_proba", proba)
    _put(arrays, dtypes, "learned_lr", distiller.learned_lr_)
    kind, states = distiller._model_init_spec
    manifest["model_init"] = {"kind": kind, "n_states": 0 if states is None else len(states)}
    if states is not None:
        arrays["model_init_states"] = [{k: v.detach().cpu() for k, v in s.items()}
                                       for s in states]
    model_init_ = getattr(distiller, "model_init_", None)
    if model_init_ is None:
        manifest["model_init"]["attribute"] = None
    elif states is not None and len(states) == 1 and _same_state(model_init_, states[0]):
        manifest["model_init"]["attribute"] = "state 0"
    else:
        manifest["model_init"]["attribute"] = "stored"
        arrays["model_init_attribute"] = {k: v.detach().cpu() for k, v in model_init_.items()}
    if module_payload is None:
        # Weights that the θ0 draws do not redraw (buffers, parameters of user layers).
        arrays["template"] = _template_state(distiller.module_)

    # The fit's scalars and curves.
    fitted = {
        "n_features_in": int(distiller.n_features_in_),
        "n_iter": int(distiller.n_iter_),
        "n_steps": int(distiller.n_steps_),
        "best_iter": int(distiller.best_iter_),
        "best_validation_score": _float_or_none(distiller.best_validation_score_),
        # where the step sizes started ("auto"'s pick); null when unknown (JSON has no NaN)
        "inner_lr_init": _finite_or_none(getattr(distiller, "inner_lr_init_", None)),
        "input_shape": _list_or_none(distiller.input_shape_),
        "device": str(distiller.device_),
        "mean_std": [float(v) for v in distiller._mean_std],
    }
    if hasattr(distiller, "feature_names_in_"):
        fitted["feature_names_in"] = [str(n) for n in distiller.feature_names_in_]
    manifest["fitted"] = fitted
    _put(arrays, dtypes, "loss_curve", np.asarray(distiller.loss_curve_, dtype=np.float64))
    _put(arrays, dtypes, "validation_scores",
         np.asarray(distiller.validation_scores_, dtype=np.float64))
    arrays["validation_iters"] = torch.as_tensor(
        np.asarray(distiller.validation_iters_, dtype=np.int64))
    manifest["dtypes"] = dtypes
    manifest["metadata"] = _check_json(metadata or {}, "metadata")

    buf = io.BytesIO()
    torch.save(arrays, buf)
    members = {_ARRAYS: buf.getvalue()}
    if module_payload is not None:
        members[_MODULE] = module_payload
    manifest["members"] = {name: _sha256(data) for name, data in members.items()}

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            # The manifest first, so that a reader meets the format version before anything.
            zf.writestr(_MANIFEST, json.dumps(manifest, indent=1))
            for name, data in members.items():
                zf.writestr(name, data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_manifest(path):
    """The manifest of a file written by :func:`save_distiller`, checked, as a dict.

    Reads no tensor; useful to see what a file holds (architecture, classes, versions).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a skdistill file, is truncated or corrupt, or has another
        format version; the message names the file and the problem.
    """
    path = Path(path)
    with _open_zip(path) as zf:
        return _read_manifest(zf, path)


def load_distiller(path, cls=None):
    """Restore the estimator written by :func:`save_distiller`.

    Parameters
    ----------
    path : str or path-like
    cls : type, default=None
        The class to build (``DatasetDistiller`` or a subclass); None is DatasetDistiller.

    Returns
    -------
    distiller : fitted estimator of class ``cls``

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a skdistill file, is truncated or corrupt, has another format
        version, or describes a module that cannot be rebuilt here; the message names the
        file and the problem.
    """
    if cls is None:
        from .distiller import DatasetDistiller as cls
    path = Path(path)
    with _open_zip(path) as zf:
        manifest = _read_manifest(zf, path)
        payloads = {name: _read_member(zf, name, path) for name in manifest["members"]}
    for name, digest in manifest["members"].items():
        if _sha256(payloads[name]) != digest:
            raise ValueError(f"{path} is corrupt: the checksum of its member {name!r} does "
                             "not match the manifest.")
    try:
        arrays = torch.load(io.BytesIO(payloads[_ARRAYS]), map_location="cpu",
                            weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is corrupt: its tensors ({_ARRAYS}) cannot be read: "
                         f"{exc}") from exc
    try:
        return _restore(cls, manifest, arrays, payloads.get(_MODULE), path)
    except (KeyError, IndexError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path} is damaged or inconsistent: {type(exc).__name__}: "
                         f"{exc}") from exc


# ---------------------------------------------------------------------- reading


def _open_zip(path):
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a skdistill file.")
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        if head == b"PK\x03\x04":
            raise ValueError(f"{path} is truncated or corrupt: it starts as a zip archive "
                             f"but cannot be read as one ({exc}).") from None
        raise ValueError(f"{path} is not a skdistill file: it is not a zip archive "
                         f"(first bytes {head!r}); files written by DatasetDistiller.save "
                         "are.") from None


def _read_member(zf, name, path):
    try:
        return zf.read(name)
    except KeyError:
        raise ValueError(f"{path} is truncated or corrupt: its member {name!r} is "
                         "missing.") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ValueError(f"{path} is corrupt: its member {name!r} cannot be read "
                         f"({exc}).") from None


def _read_manifest(zf, path):
    names = zf.namelist()
    if _MANIFEST not in names:
        listing = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ValueError(f"{path} is not a skdistill file: a zip archive without "
                         f"{_MANIFEST} (it holds: {listing or 'nothing'}).")
    raw = _read_member(zf, _MANIFEST, path)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is corrupt: its {_MANIFEST} is not valid JSON "
                         f"({exc}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{path} is not a skdistill file: its {_MANIFEST} declares format "
                         f"{found!r}, expected {FORMAT_NAME!r}.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        from . import __version__

        writer = manifest.get("written_by", {}).get("skdistill", "an unknown version")
        hint = ("a newer skdistill wrote it; upgrade skdistill to read it"
                if isinstance(version, int) and version > FORMAT_VERSION
                else "re-save it with the skdistill version that wrote it, or refit")
        raise ValueError(f"{path} has format version {version!r} (written by skdistill "
                         f"{writer}), but skdistill {__version__} reads format version "
                         f"{FORMAT_VERSION} only: {hint}.")
    missing = [k for k in ("members", "params", "classes", "architecture", "fitted",
                           "dtypes", "model_init") if k not in manifest]
    if missing or _ARRAYS not in manifest.get("members", {}):
        raise ValueError(f"{path} is corrupt: its {_MANIFEST} lacks "
                         f"{', '.join(missing) or _ARRAYS}.")
    return manifest


def _restore(cls, manifest, arrays, module_payload, path):
    classes = _decode_classes(manifest["classes"])
    dtypes = manifest["dtypes"]
    fitted = manifest["fitted"]
    arch = manifest["architecture"]
    pickled = None
    if arch["kind"] == "pickled":
        if module_payload is None:
            raise ValueError(f"{path} is truncated or corrupt: the architecture is a pickled "
                             f"module but {_MODULE} is missing.")
        # weights_only=False: the member is a pickled user module (see the module
        # docstring); its checksum was verified, but its code runs: trust the source.
        try:
            pickled = torch.load(io.BytesIO(module_payload), map_location="cpu",
                                 weights_only=False)
        except Exception as exc:
            raise ValueError(f"{path}: its pickled module ({_MODULE}) cannot be loaded here "
                             f"({type(exc).__name__}: {exc}); is the module's code "
                             "importable?") from exc

    params = _decode_params(manifest["params"], arch, pickled, arrays, dtypes, classes, path)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    est = cls(**{k: v for k, v in params.items() if k in accepted})
    fit_device = torch.device(fitted["device"])
    if fit_device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"{path} was fitted on {fit_device}; CUDA is not available here, so the "
                      "loaded distiller computes on the CPU (device='auto').", UserWarning)
        if "device" in accepted:
            est.set_params(device="auto")
        fit_device = torch.device("cpu")

    input_shape = fitted["input_shape"]
    input_shape = tuple(input_shape) if input_shape is not None else None
    if pickled is not None:
        module_ = pickled["module_"]
    else:
        module_ = _rebuild_module(arch, params, classes, input_shape, path)
        template = arrays["template"]
        missing, unexpected = module_.load_state_dict(template, strict=False)
        if unexpected:
            raise ValueError(f"{path}: the module rebuilt here has no {unexpected[:3]}; "
                             "did its class change since the file was written?")
    shapes = {k: tuple(v.shape) for k, v in module_.named_parameters()}
    if shapes != {k: tuple(v) for k, v in arch["parameters"].items()}:
        raise ValueError(f"{path}: the module rebuilt here has other parameters than the one "
                         "saved (names or shapes differ); did its class change since the file "
                         "was written?")

    kind = manifest["model_init"]["kind"]
    states = None
    if kind != "random":
        states = list(arrays["model_init_states"])
        for s in states:
            if {k: tuple(v.shape) for k, v in s.items()} != shapes:
                raise ValueError(f"{path}: the θ0 states do not fit the module rebuilt here "
                                 "(parameter names or shapes differ).")
    est._model_init_spec = (kind, states)
    attribute = manifest["model_init"]["attribute"]
    est.model_init_ = (None if attribute is None
                       else copy.deepcopy(states[0]) if attribute == "state 0"
                       else dict(arrays["model_init_attribute"]))

    est.classes_ = classes
    est.n_features_in_ = fitted["n_features_in"]
    if "feature_names_in" in fitted:
        est.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)
    if "stored_X" in arrays:
        from .distiller import decode_stored

        factor = params.get("multi_formation", 1)
        est.stored_X_ = _get(arrays, dtypes, "stored_X")
        if (input_shape is None or len(input_shape) != 3 or not isinstance(factor, int)
                or factor < 2 or est.stored_X_.ndim != 2
                or est.stored_X_.shape[1] != fitted["n_features_in"]):
            raise ValueError(f"{path} is inconsistent: stored images of shape "
                             f"{est.stored_X_.shape} with multi_formation={factor!r} and "
                             f"input_shape={input_shape}.")
        est.distilled_X_ = decode_stored(est.stored_X_, input_shape, factor,
                                         est.stored_X_.dtype)
    else:
        est.distilled_X_ = _get(arrays, dtypes, "distilled_X")
        est.stored_X_ = est.distilled_X_
    y_index = arrays["distilled_y"].numpy()
    est.distilled_y_ = classes[y_index]
    if manifest["hard_labels"]:
        est.distilled_y_proba_ = np.eye(len(classes))[y_index]
    else:
        est.distilled_y_proba_ = _get(arrays, dtypes, "distilled_y_proba")
    est.learned_lr_ = _get(arrays, dtypes, "learned_lr")
    n = est.distilled_X_.shape[0]
    if (est.distilled_X_.ndim != 2 or est.distilled_X_.shape[1] != est.n_features_in_
            or y_index.shape != (n,) or est.distilled_y_proba_.shape != (n, len(classes))):
        raise ValueError(f"{path} is inconsistent: synthetic samples of shape "
                         f"{est.distilled_X_.shape}, {y_index.shape[0]} labels and soft labels "
                         f"of shape {est.distilled_y_proba_.shape} for "
                         f"{est.n_features_in_} features and {len(classes)} classes.")
    est.n_iter_ = fitted["n_iter"]
    est.loss_curve_ = _get(arrays, dtypes, "loss_curve").tolist()
    est.validation_scores_ = _get(arrays, dtypes, "validation_scores").tolist()
    est.validation_iters_ = arrays["validation_iters"].tolist()
    est.best_validation_score_ = fitted["best_validation_score"]
    est.best_iter_ = fitted["best_iter"]
    # older files kept no starting step size: unknown (NaN), as after a resume without one
    lr0 = fitted.get("inner_lr_init")
    est.inner_lr_init_ = math.nan if lr0 is None else float(lr0)
    est.module_ = module_
    est.input_shape_ = input_shape
    est.device_ = fit_device
    mean, std = fitted["mean_std"]
    est._mean_std = (mean, std)
    est._state = _training_state(est, mean, std, len(classes), y_index)
    est._optimizer_state = None
    est._rng = np.random.RandomState(params.get("random_state")
                                     if isinstance(params.get("random_state"), int) else None)
    return est


def _training_state(est, mean, std, n_classes, y_index):
    """The tensors a warm start continues from, recomputed from the public attributes."""
    z = (torch.as_tensor(est.stored_X_, dtype=torch.float32) - mean) / std
    proba = torch.as_tensor(est.distilled_y_proba_, dtype=torch.float32)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(y_index), n_classes).float()
    if est.get_params().get("learn_labels", False) or not torch.equal(proba, onehot):
        logits = proba.clamp_min(1e-12).log()  # softmax(log p) = p: learned or fixed soft
    else:
        logits = onehot * math.log(9.0 * max(n_classes - 1, 1))
    return {
        "z": z,
        "log_lr": torch.as_tensor(est.learned_lr_, dtype=torch.float32).log(),
        "label_logits": logits,
    }


def _rebuild_module(arch, params, classes, input_shape, path):
    from .nets import make_module

    if arch["kind"] == "builtin":
        module = arch["name"]
        module_params = arch.get("module_params", params.get("module_params"))
    elif arch["kind"] == "class":
        module = _import(arch["import_path"], path)
        module_params = params.get("module_params")
    else:
        raise ValueError(f"{path} has an unknown architecture kind {arch['kind']!r}.")
    # Building a module draws its initial weights; keep the caller's torch RNG untouched.
    with torch.random.fork_rng(devices=[]):
        try:
            return make_module(module, module_params, arch["n_features"], len(classes),
                               input_shape)
        except ValueError as exc:
            raise ValueError(f"{path}: the module cannot be rebuilt here: {exc}") from None


def _import(import_path, path):
    module_name, _, qualname = import_path.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{path} needs the module class {import_path}, which cannot be "
                         f"imported here ({exc}).") from None
    return obj


# ---------------------------------------------------------------------- writing


def _versions():
    import sklearn

    from . import __version__

    return {"skdistill": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}


def _describe_architecture(distiller, n_classes):
    """The architecture as JSON, and the pickled module where JSON cannot rebuild it."""
    module = distiller.module
    module_params = distiller.module_params
    sizes = {"n_features": int(distiller.n_features_in_), "n_classes": n_classes,
             "input_shape": _list_or_none(distiller.input_shape_),
             "parameters": {k: list(v.shape) for k, v in distiller.module_.named_parameters()}}
    if isinstance(module, str) and module in _BUILTIN_MODULES and _is_plain(module_params):
        record = {"kind": "builtin", "name": module, **sizes}
        if module_params is None:
            # what None meant when this was saved ("convnet": width 32, depth 2); files
            # without it predate that default and meant the class's own defaults
            record["module_params"] = default_module_params(module, None)
        return record, None
    if inspect.isclass(module) and _import_path(module) and _is_plain(module_params):
        return {"kind": "class", "import_path": _import_path(module), **sizes}, None
    buf = io.BytesIO()
    payload = {"module_": distiller.module_, "module": module, "module_params": module_params}
    try:
        torch.save(payload, buf)
    except Exception as exc:
        raise ValueError(
            f"module={module!r} cannot be saved: it is not importable by name with plain "
            f"parameters, and pickling it fails ({type(exc).__name__}: {exc}). Define the "
            "class at the top level of an importable module."
        ) from None
    name = type(distiller.module_)
    return {"kind": "pickled", "class": f"{name.__module__}:{name.__qualname__}",
            **sizes}, buf.getvalue()


def _import_path(cls):
    """``"package.module:QualName"`` when importing it gives back ``cls``, else None."""
    if "<locals>" in cls.__qualname__:
        return None
    path = f"{cls.__module__}:{cls.__qualname__}"
    try:
        found = _import(path, "")
    except ValueError:
        return None
    return path if found is cls else None


def _template_state(net):
    """State of ``net`` that a fresh θ0 draw does not replace.

    A draw calls ``reset_parameters`` of every layer that has one, so the parameters of
    PyTorch's own layers are redrawn; buffers and the parameters of other modules are kept
    from the template and must be saved.
    """
    redrawn = set()
    for prefix, mod in net.named_modules():
        if (type(mod).__module__.startswith("torch.nn")
                and callable(getattr(mod, "reset_parameters", None))):
            for name, _ in mod.named_parameters(recurse=False):
                redrawn.add(f"{prefix}.{name}" if prefix else name)
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()
            if k not in redrawn}


def _encode_params(distiller, classes, arrays, dtypes):
    """Constructor parameters as tagged JSON; names of those that cannot be stored."""
    out, dropped = {}, []
    for name, value in distiller.get_params(deep=False).items():
        if name == "module":
            out[name] = {"__architecture__": True}
        elif name == "model_init" and not isinstance(value, str):
            out[name] = {"__model_init__": "list" if isinstance(value, list) else "single"}
        elif (name in ("init", "label_init") and value is not None
              and not isinstance(value, str) and not hasattr(value, "predict_proba")):
            _put(arrays, dtypes, name, np.asarray(value))
            out[name] = {"__array__": name}
        elif name == "relabel" and value:
            out[name] = {"__relabel__": [[int(_class_index(classes, [s])[0]),
                                          int(_class_index(classes, [d])[0])]
                                         for s, d in value.items()]}
        elif name == "device":
            out[name] = str(value)
        elif isinstance(value, os.PathLike):
            out[name] = os.fspath(value)
        elif _is_plain(value):
            out[name] = _tag(value)
        else:
            # Callables, RandomState instances: not data. They come back as None.
            dropped.append(name)
            out[name] = None
    return out, dropped


def _decode_params(encoded, arch, pickled, arrays, dtypes, classes, path):
    labels = classes.tolist()
    params = {}
    for name, value in encoded.items():
        if isinstance(value, dict) and "__architecture__" in value:
            if pickled is not None:
                value = pickled["module"]
            elif arch["kind"] == "class":
                value = _import(arch["import_path"], path)
            else:
                value = arch["name"]
        elif isinstance(value, dict) and "__model_init__" in value:
            states = [dict(s) for s in arrays["model_init_states"]]
            value = states if value["__model_init__"] == "list" else states[0]
        elif isinstance(value, dict) and "__array__" in value:
            value = _get(arrays, dtypes, value["__array__"])
        elif isinstance(value, dict) and "__relabel__" in value:
            value = {labels[s]: labels[d] for s, d in value["__relabel__"]}
        else:
            value = _untag(value)
        params[name] = value
    if pickled is not None and "module_params" in params:
        params["module_params"] = pickled["module_params"]
    return params


def _is_plain(value):
    """JSON data after tagging tuples: None, bool, int, float, str, lists, tuples, dicts."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _tag(value):
    if isinstance(value, tuple):
        return {"__tuple__": [_tag(v) for v in value]}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    return value


def _untag(value):
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_untag(v) for v in value["__tuple__"])
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


def _check_json(value, what):
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON data: {exc}") from None
    return value


def _encode_classes(classes):
    kind = classes.dtype.kind
    values = classes.tolist()
    if kind == "O":
        types = {type(v) for v in values}
        if types <= {str}:
            element = "str"
        elif types <= {int} or types <= {bool}:
            element = types.pop().__name__ if types else "str"
        else:
            raise ValueError(f"classes of types {sorted(t.__name__ for t in types)} cannot be "
                             "saved; use numbers or strings as labels.")
        encoded = {"dtype": "object", "element": element, "values": values}
    elif kind in "biuUf":
        encoded = {"dtype": classes.dtype.str, "values": values}
    else:
        raise ValueError(f"classes of dtype {classes.dtype} cannot be saved; use numbers or "
                         "strings as labels.")
    if not np.array_equal(_decode_classes(encoded), classes):
        raise ValueError(f"classes {values[:5]} do not survive a round trip through JSON.")
    return encoded


def _decode_classes(encoded):
    if encoded["dtype"] == "object":
        out = np.empty(len(encoded["values"]), dtype=object)
        out[:] = encoded["values"]
        return out
    return np.asarray(encoded["values"], dtype=np.dtype(encoded["dtype"]))


def _class_index(classes, labels):
    """Index of each label in the sorted ``classes``; every label must be a class."""
    labels = np.asarray(labels, dtype=object if classes.dtype == object else None)
    index = np.searchsorted(classes, labels)
    index = np.clip(index, 0, len(classes) - 1)
    if not np.array_equal(classes[index], labels):
        raise ValueError("a label of the synthetic set or of relabel is not among classes_.")
    return index


def _put(arrays, dtypes, name, value):
    """Store ``value``; float64 arrays of exact float32 values are stored as float32."""
    arr = np.asarray(value)
    dtypes[name] = arr.dtype.str
    if arr.dtype == np.float64:
        small = arr.astype(np.float32)
        if np.array_equal(small.astype(np.float64), arr, equal_nan=True):
            arr = small
    arrays[name] = torch.from_numpy(np.ascontiguousarray(arr))


def _get(arrays, dtypes, name):
    return arrays[name].numpy().astype(np.dtype(dtypes[name]), copy=True)


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def _float_or_none(value):
    return None if value is None else float(value)


def _finite_or_none(value):
    return None if value is None or not math.isfinite(value) else float(value)


def _list_or_none(value):
    return None if value is None else [int(v) for v in value]


def _sha256(data):
    return hashlib.sha256(data).hexdigest()
